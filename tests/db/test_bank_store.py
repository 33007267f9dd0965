"""SqlBankStore on the seeded demo bank: every method, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
import structlog
import trio

from archer.bank.pins import verify_pin
from archer.bank.ports import Account, CardChange
from archer.db.bank import SqlBankStore
from archer.db.seed import load_demo_bank, seed_demo_bank
from archer.db.store import SqlCallStore
from archer.db.tables import cards, customers
from archer.errors import StoreError

DEMO_BANK = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
# The demo bank's customers (archer/data/demo_bank.json), by the number they call from.
MAYA = "+15555550101"
JAMES = "+15555550102"
ELENA = "+15555550103"
NO_SUCH_CUSTOMER = 987_654_321
LONG_AGO = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def bank(sql_store: SqlCallStore) -> SqlBankStore:
    """A SqlBankStore sharing ``sql_store``'s engine, on a freshly seeded demo bank."""
    await trio.to_thread.run_sync(seed_demo_bank, sql_store.engine, DEMO_BANK)
    return SqlBankStore.from_call_store(sql_store)


@pytest.fixture
async def ids(bank: SqlBankStore) -> dict[str, int]:
    """Customer ids of the demo bank, by phone number."""
    phones = [customer.phone_e164 for customer in load_demo_bank(DEMO_BANK).customers]
    return await trio.to_thread.run_sync(_customer_ids, bank.engine, phones)


# --- wiring ---------------------------------------------------------------------------------


async def test_from_call_store_shares_the_engine(
    sql_store: SqlCallStore, bank: SqlBankStore
) -> None:
    """A bank store built from the call store runs on the same engine and limiter."""
    assert bank.engine is sql_store.engine
    assert bank == SqlBankStore.from_engine(sql_store.engine, sql_store.limiter)


async def test_the_bank_reports_each_operation_to_the_call_stores_metrics_hook(
    sql_store: SqlCallStore, ids: dict[str, int]
) -> None:
    """One trio/thread boundary for every SQL adapter: the bank's queries are timed too."""
    seen: list[tuple[str, bool]] = []

    def observe(operation: str, seconds: float, *, error: bool) -> None:
        assert seconds >= 0
        seen.append((operation, error))

    bank = SqlBankStore.from_call_store(attrs.evolve(sql_store, observe=observe))
    await bank.pin_hash(ids[MAYA])
    await bank.accounts(ids[MAYA], None)
    assert seen == [("pin_hash", False), ("accounts", False)]


# --- pin_hash -------------------------------------------------------------------------------


async def test_pin_hash_is_the_seeded_hash(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """A seeded customer's PIN hash verifies their demo PIN and nobody else's."""
    pin_hash = await bank.pin_hash(ids[MAYA])

    assert pin_hash is not None
    assert pin_hash.startswith("pbkdf2_sha256$")
    assert verify_pin("1234", pin_hash)
    assert not verify_pin("2468", pin_hash)


async def test_pin_hash_is_none_without_a_pin(bank: SqlBankStore) -> None:
    """A customer created by a first call (no PIN) and an unknown customer both answer None."""
    no_pin = await trio.to_thread.run_sync(_insert_customer, bank.engine, "+15555550199")

    assert await bank.pin_hash(no_pin) is None
    assert await bank.pin_hash(NO_SUCH_CUSTOMER) is None


# --- accounts -------------------------------------------------------------------------------


async def test_accounts_lists_the_customers_accounts_by_type(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """All of a customer's accounts come back, ordered by type then last4."""
    assert await bank.accounts(ids[MAYA], None) == [
        Account("checking", "4821", 254310, "USD", "open"),
        Account("credit", "9904", -64218, "USD", "open"),
        Account("savings", "7310", 1285000, "USD", "open"),
    ]


async def test_accounts_filters_by_type(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """Asking for one type returns only that type; a type the customer lacks returns []."""
    assert await bank.accounts(ids[MAYA], "savings") == [
        Account("savings", "7310", 1285000, "USD", "open")
    ]
    assert await bank.accounts(ids[JAMES], "credit") == [
        Account("credit", "3389", -121055, "USD", "open")
    ]
    assert await bank.accounts(ids[JAMES], "savings") == []


async def test_accounts_never_returns_another_customers(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """Each customer sees exactly their own accounts, never a neighbour's."""
    james = await bank.accounts(ids[JAMES], None)
    elena = await bank.accounts(ids[ELENA], "checking")

    assert [account.last4 for account in james] == ["1157", "3389"]
    assert [account.last4 for account in elena] == ["5520"]


async def test_accounts_of_an_unknown_customer_is_empty(bank: SqlBankStore) -> None:
    """An id with no customer behind it has no accounts."""
    assert await bank.accounts(NO_SUCH_CUSTOMER, None) == []
    assert await bank.accounts(NO_SUCH_CUSTOMER, "checking") == []


# --- recent_transactions --------------------------------------------------------------------


async def test_transactions_are_newest_first_across_accounts(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """Without a type, the newest transactions of all the customer's accounts interleave."""
    recent = await bank.recent_transactions(ids[MAYA], None, 5)

    assert [(t.account_type, t.account_last4, t.amount_cents, t.description) for t in recent] == [
        ("checking", "4821", -6842, "Whole Foods Market"),
        ("credit", "9904", -1599, "Chipotle Mexican Grill"),
        ("checking", "4821", -575, "Blue Bottle Coffee"),
        ("credit", "9904", -12999, "Amazon.com"),
        ("checking", "4821", -2299, "Netflix subscription"),
    ]
    assert all(t.currency == "USD" for t in recent)
    assert all(t.posted_at.tzinfo is not None for t in recent)
    # Whole Foods at 19:40 and Blue Bottle at 08:12 on the same day.
    assert recent[0].posted_at - recent[2].posted_at == timedelta(hours=11, minutes=28)


async def test_transactions_limit_is_honoured_and_clamped(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """At most ``limit`` come back; below 1 means one, and everything fits under the cap."""
    everything = await bank.recent_transactions(ids[MAYA], None, 1000)

    assert len(await bank.recent_transactions(ids[MAYA], None, 3)) == 3
    assert len(await bank.recent_transactions(ids[MAYA], None, 0)) == 1
    assert len(await bank.recent_transactions(ids[MAYA], None, -5)) == 1
    assert len(everything) == 9 + 5 + 7
    posted = [t.posted_at for t in everything]
    assert posted == sorted(posted, reverse=True)


async def test_transactions_filter_by_type(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """A type restricts the history to that kind of account, still newest first."""
    savings = await bank.recent_transactions(ids[MAYA], "savings", 10)

    assert [t.description for t in savings] == [
        "Transfer from checking ending 4821",
        "Interest payment",
        "Transfer from checking ending 4821",
        "Interest payment",
        "Transfer from checking ending 4821",
    ]
    assert {(t.account_type, t.account_last4) for t in savings} == {("savings", "7310")}
    assert await bank.recent_transactions(ids[JAMES], "savings", 10) == []


async def test_transactions_never_include_another_customers(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """A customer's history holds only their own accounts; an unknown customer has none."""
    james = await bank.recent_transactions(ids[JAMES], None, 50)

    assert len(james) == 7 + 5
    assert {t.account_last4 for t in james} == {"1157", "3389"}
    assert await bank.recent_transactions(NO_SUCH_CUSTOMER, None, 10) == []


# --- set_card_status ------------------------------------------------------------------------


async def test_freeze_changes_the_card_and_its_updated_at(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """Freezing an active card stores frozen and moves updated_at to now."""
    await trio.to_thread.run_sync(_set_card, bank.engine, ids[MAYA], "2207", "active")
    before = datetime.now(UTC)

    change = await bank.set_card_status(ids[MAYA], "2207", "frozen")

    assert change == CardChange(last4="2207", previous_status="active", status="frozen")
    status, updated_at = await trio.to_thread.run_sync(_card, bank.engine, ids[MAYA], "2207")
    assert status == "frozen"
    assert before <= updated_at <= datetime.now(UTC)


async def test_freeze_again_writes_nothing(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """Freezing a frozen card reports it unchanged and leaves updated_at where it was."""
    await trio.to_thread.run_sync(_set_card, bank.engine, ids[JAMES], "3389", "frozen")

    change = await bank.set_card_status(ids[JAMES], "3389", "frozen")

    assert change == CardChange(last4="3389", previous_status="frozen", status="frozen")
    card = await trio.to_thread.run_sync(_card, bank.engine, ids[JAMES], "3389")
    assert card == ("frozen", LONG_AGO)


async def test_freeze_twice_moves_updated_at_once(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """The second of two freezes is a no-op: updated_at stays at the first freeze's time."""
    await bank.set_card_status(ids[MAYA], "2207", "frozen")
    first = await trio.to_thread.run_sync(_card, bank.engine, ids[MAYA], "2207")

    change = await bank.set_card_status(ids[MAYA], "2207", "frozen")

    assert change == CardChange(last4="2207", previous_status="frozen", status="frozen")
    assert await trio.to_thread.run_sync(_card, bank.engine, ids[MAYA], "2207") == first


async def test_unfreeze_reactivates_a_frozen_card(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """Unfreezing a frozen card stores active and moves updated_at."""
    await trio.to_thread.run_sync(_set_card, bank.engine, ids[JAMES], "3389", "frozen")

    change = await bank.set_card_status(ids[JAMES], "3389", "active")

    assert change == CardChange(last4="3389", previous_status="frozen", status="active")
    status, updated_at = await trio.to_thread.run_sync(_card, bank.engine, ids[JAMES], "3389")
    assert status == "active"
    assert updated_at > LONG_AGO


async def test_lost_card_is_never_changed(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """A lost card stays lost through freeze and unfreeze, and is reported unchanged."""
    await trio.to_thread.run_sync(_set_card, bank.engine, ids[MAYA], "9904", "lost")

    frozen = await bank.set_card_status(ids[MAYA], "9904", "frozen")
    active = await bank.set_card_status(ids[MAYA], "9904", "active")

    assert frozen == active == CardChange(last4="9904", previous_status="lost", status="lost")
    card = await trio.to_thread.run_sync(_card, bank.engine, ids[MAYA], "9904")
    assert card == ("lost", LONG_AGO)


async def test_another_customers_card_is_not_found(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """A customer naming a neighbour's card gets None, and the neighbour's card is untouched."""
    await trio.to_thread.run_sync(_set_card, bank.engine, ids[MAYA], "2207", "active")

    assert await bank.set_card_status(ids[JAMES], "2207", "frozen") is None
    card = await trio.to_thread.run_sync(_card, bank.engine, ids[MAYA], "2207")
    assert card == ("active", LONG_AGO)


async def test_unknown_card_or_customer_is_not_found(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """A last4 the customer has no card for, or an unknown customer, answers None."""
    assert await bank.set_card_status(ids[MAYA], "0000", "frozen") is None
    # An account's last4 is not a card's: Maya's savings 7310 has no card.
    assert await bank.set_card_status(ids[MAYA], "7310", "frozen") is None
    assert await bank.set_card_status(NO_SUCH_CUSTOMER, "2207", "frozen") is None


async def test_concurrent_freezes_change_the_card_once(
    bank: SqlBankStore, ids: dict[str, int]
) -> None:
    """Racing freezes of one card: exactly one sees it active, the others see it frozen."""
    changes: list[CardChange | None] = []

    async def freeze() -> None:
        changes.append(await bank.set_card_status(ids[MAYA], "2207", "frozen"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(freeze)

    assert sorted(change.previous_status for change in changes if change is not None) == [
        "active",
        "frozen",
        "frozen",
        "frozen",
    ]
    assert {change.status for change in changes if change is not None} == {"frozen"}


async def test_set_card_status_refuses_lost(bank: SqlBankStore, ids: dict[str, int]) -> None:
    """Only active and frozen can be asked for; reporting a card lost is not this method's."""
    with pytest.raises(ValueError, match="active or frozen"):
        await bank.set_card_status(ids[MAYA], "2207", "lost")  # type: ignore[arg-type]

    card = await trio.to_thread.run_sync(_card, bank.engine, ids[MAYA], "2207")
    assert card[0] == "active"


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/test", id="postgres-refused"),
        pytest.param("sqlite:////nonexistent-archer-dir/missing/archer.db", id="sqlite-no-dir"),
    ],
)
async def test_unreachable_database_raises_store_error(url: str) -> None:
    """Every method turns a database it cannot reach into StoreError, and logs a warning."""
    store = SqlBankStore.open(url, pool_size=1)
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(StoreError, match=r"^pin_hash failed: "):
                await store.pin_hash(1)
            with pytest.raises(StoreError, match=r"^accounts failed: "):
                await store.accounts(1, None)
            with pytest.raises(StoreError, match=r"^recent_transactions failed: "):
                await store.recent_transactions(1, "checking", 5)
            with pytest.raises(StoreError, match=r"^set_card_status failed: "):
                await store.set_card_status(1, "2207", "frozen")
    finally:
        await store.aclose()

    warnings = [line for line in logs if line["event"] == "db.operation_failed"]
    assert [line["operation"] for line in warnings] == [
        "pin_hash",
        "accounts",
        "recent_transactions",
        "set_card_status",
    ]
    assert all(line["log_level"] == "warning" for line in warnings)


async def test_store_error_chains_the_driver_error(sqlite_url: str) -> None:
    """StoreError keeps the SQLAlchemy error as its cause; a missing table is such an error."""
    store = SqlBankStore.open(sqlite_url, pool_size=1)
    try:
        with pytest.raises(StoreError) as caught:
            await store.accounts(1, None)
    finally:
        await store.aclose()

    assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)
    assert "no such table" in str(caught.value)


# --- helpers (sync: they run in a worker thread, like the store's own work) -------------------


def _customer_ids(engine: sa.Engine, phones: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(customers.c.phone_e164, customers.c.id).where(
                customers.c.phone_e164.in_(phones)
            )
        ).all()
    found = {row.phone_e164: row.id for row in rows}
    assert set(found) == set(phones) >= {MAYA, JAMES, ELENA}
    return found


def _insert_customer(engine: sa.Engine, phone: str) -> int:
    with engine.begin() as conn:
        customer_id: int = conn.execute(
            sa.insert(customers).values(phone_e164=phone).returning(customers.c.id)
        ).scalar_one()
    return customer_id


def _set_card(engine: sa.Engine, customer_id: int, last4: str, status: str) -> None:
    """Put the card in ``status`` with ``updated_at`` at LONG_AGO, so a write is visible."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(cards)
            .where(cards.c.customer_id == customer_id, cards.c.last4 == last4)
            .values(status=status, updated_at=LONG_AGO)
        )


def _card(engine: sa.Engine, customer_id: int, last4: str) -> tuple[str, datetime]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(cards.c.status, cards.c.updated_at).where(
                cards.c.customer_id == customer_id, cards.c.last4 == last4
            )
        ).one()
    return row.status, row.updated_at
