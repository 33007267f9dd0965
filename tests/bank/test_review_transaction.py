"""``review_transaction`` (issue 22) against the demo bank in a real database.

Verified callers only; ``recognised=false`` freezes the card that made the payment (or, for a
payment that names no card, the paying account's active cards, and says so) and records the
dispute in one transaction; ``true`` records the confirmation; the first answer
stands (idempotent); another customer's payment is never touched; the tool is audited before it
acts (``side_effect``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import trio

from archer.bank.tools import bank_tools
from archer.db.bank import SqlBankStore
from archer.db.engine import init_schema
from archer.db.reviews import SqlTransactionReviews
from archer.db.seed import seed_demo_bank
from archer.db.store import SqlCallStore
from archer.db.tables import accounts, cards, customers, transaction_reviews, transactions
from archer.errors import ToolError
from tests.bank.test_tools import JAMES, MAYA, SEED, Bank, verified
from tests.fakes.telephony import FakeTelephony


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    store = SqlCallStore.open(database_url, pool_size=2)

    def prepare() -> dict[str, int]:
        init_schema(store.engine)
        seed_demo_bank(store.engine, SEED)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(customers.c.phone_e164, customers.c.id)).all()
        return {phone: customer_id for phone, customer_id in rows}

    ids = await trio.to_thread.run_sync(prepare)
    tools = bank_tools(
        SqlBankStore.from_call_store(store),
        FakeTelephony(),
        human_agent_number="+15555550199",
        reviews=SqlTransactionReviews(store.engine, store.limiter),
        # These tests verify by a spoken PIN (verify_caller); the default line takes keypad only.
        pin_entry="both",
    )
    try:
        yield Bank(store, tools, ids)
    finally:
        await store.aclose()


def payment_on(bank: Bank, customer: dict[str, object], account_last4: str, nth: int = 0) -> int:
    """The id of the ``nth`` transaction on the customer's account ending ``account_last4``."""
    with bank.store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(transactions.c.id)
                .join(accounts, accounts.c.id == transactions.c.account_id)
                .join(customers, customers.c.id == accounts.c.customer_id)
                .where(
                    customers.c.phone_e164 == customer["phone_e164"],
                    accounts.c.last4 == account_last4,
                )
                .order_by(transactions.c.id)
                .offset(nth)
                .limit(1)
            ).scalar_one()
        )


def reviews(bank: Bank) -> list[tuple[int, bool, str]]:
    with bank.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                transaction_reviews.c.transaction_id,
                transaction_reviews.c.recognised,
                transaction_reviews.c.cards_frozen,
            ).order_by(transaction_reviews.c.id)
        ).all()
    return [(int(r[0]), bool(r[1]), str(r[2])) for r in rows]


async def test_an_unverified_caller_changes_nothing(bank: Bank) -> None:
    bank.caller(str(MAYA["phone_e164"]))
    payment = payment_on(bank, MAYA, "4821")
    with pytest.raises(ToolError, match="not verified"):
        await bank.run("review_transaction", {"transaction_id": payment, "recognised": False})
    assert reviews(bank) == []
    assert bank.card_status("2207") == "active"


async def test_a_dispute_freezes_the_paying_card_and_is_recorded_once(bank: Bank) -> None:
    await verified(bank, MAYA)
    payment = payment_on(bank, MAYA, "4821")
    result = await bank.run("review_transaction", {"transaction_id": payment, "recognised": False})
    assert result == {
        "transaction_id": payment,
        "recognised": False,
        "dispute_recorded": True,
        "cards_frozen": ["2207"],
        "freeze_scope": "card",
        "already_recorded": False,
    }
    assert bank.card_status("2207") == "frozen"
    assert bank.card_status("9904") == "active"  # another account's card is left alone
    again = await bank.run("review_transaction", {"transaction_id": payment, "recognised": True})
    assert again["already_recorded"] is True
    assert again["recognised"] is False  # the first answer stands
    assert reviews(bank) == [(payment, False, "2207")]


async def test_a_recognised_payment_is_recorded_and_nothing_frozen(bank: Bank) -> None:
    await verified(bank, MAYA)
    payment = payment_on(bank, MAYA, "4821", nth=1)
    result = await bank.run("review_transaction", {"transaction_id": payment, "recognised": True})
    assert result["dispute_recorded"] is False
    assert result["cards_frozen"] == []
    assert bank.card_status("2207") == "active"
    assert reviews(bank) == [(payment, True, "")]


async def test_someone_elses_payment_is_never_touched(bank: Bank) -> None:
    await verified(bank, MAYA)
    with bank.store.engine.connect() as conn:
        james_account = conn.execute(
            sa.select(accounts.c.last4)
            .join(customers, customers.c.id == accounts.c.customer_id)
            .join(cards, cards.c.account_id == accounts.c.id)
            .where(customers.c.phone_e164 == JAMES["phone_e164"])
            .limit(1)
        ).scalar_one()
    payment = payment_on(bank, JAMES, str(james_account))
    with pytest.raises(ToolError, match="no payment"):
        await bank.run("review_transaction", {"transaction_id": payment, "recognised": False})
    assert reviews(bank) == []


async def test_the_tool_is_audited_before_it_acts(bank: Bank) -> None:
    tool = bank.tools.get("review_transaction")
    assert tool is not None
    assert tool.side_effect is True


def add_card(bank: Bank, customer: dict[str, object], account_last4: str, last4: str) -> None:
    """A second active card on the customer's account ending ``account_last4``."""
    with bank.store.engine.begin() as conn:
        account_id, customer_id = conn.execute(
            sa.select(accounts.c.id, accounts.c.customer_id)
            .join(customers, customers.c.id == accounts.c.customer_id)
            .where(
                customers.c.phone_e164 == customer["phone_e164"],
                accounts.c.last4 == account_last4,
            )
        ).one()
        conn.execute(
            sa.insert(cards).values(customer_id=customer_id, account_id=account_id, last4=last4)
        )


def freeze_scopes(bank: Bank) -> list[str]:
    with bank.store.engine.connect() as conn:
        return [
            str(scope)
            for scope in conn.execute(
                sa.select(transaction_reviews.c.freeze_scope).order_by(transaction_reviews.c.id)
            ).scalars()
        ]


async def test_a_dispute_freezes_exactly_the_card_that_paid(bank: Bank) -> None:
    """Another active card on the same account keeps working: only the paying card is frozen."""
    add_card(bank, MAYA, "4821", "5150")
    await verified(bank, MAYA)
    payment = payment_on(bank, MAYA, "4821")  # Blue Bottle Coffee, paid with card 2207
    result = await bank.run("review_transaction", {"transaction_id": payment, "recognised": False})
    assert (result["cards_frozen"], result["freeze_scope"]) == (["2207"], "card")
    assert bank.card_status("2207") == "frozen"
    assert bank.card_status("5150") == "active"
    assert freeze_scopes(bank) == ["card"]


async def test_a_payment_without_a_card_freezes_the_accounts_cards_and_says_so(bank: Bank) -> None:
    add_card(bank, MAYA, "4821", "5150")
    await verified(bank, MAYA)
    with bank.store.engine.connect() as conn:
        payment = conn.execute(
            sa.select(transactions.c.id).where(
                transactions.c.description == "Rent - Parkview Apartments"
            )
        ).scalar_one()
        assert (
            conn.execute(
                sa.select(transactions.c.card_id).where(transactions.c.id == payment)
            ).scalar_one()
            is None
        )
    result = await bank.run("review_transaction", {"transaction_id": payment, "recognised": False})
    assert (result["cards_frozen"], result["freeze_scope"]) == (["2207", "5150"], "account")
    assert bank.card_status("9904") == "active"  # the credit card draws on another account
    assert freeze_scopes(bank) == ["account"]
    again = await bank.run("review_transaction", {"transaction_id": payment, "recognised": False})
    assert (again["already_recorded"], again["freeze_scope"]) == (True, "account")
