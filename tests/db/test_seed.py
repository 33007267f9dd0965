"""The demo bank seeds completely, and seeding again adds nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from archer.bank.pins import verify_pin
from archer.db import tables
from archer.db.engine import init_schema, make_engine
from archer.db.seed import SeedSummary, load_demo_bank, seed_demo_bank
from archer.errors import ConfigError

DEMO_BANK = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database with the schema applied."""
    engine = make_engine(database_url, pool_size=1)
    try:
        init_schema(engine)
        yield engine
    finally:
        engine.dispose()


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (tables.customers, tables.accounts, tables.cards, tables.transactions)
        }


def test_demo_bank_file_matches_the_brief() -> None:
    """Three customers, 1-3 accounts and 1-2 cards each, 5-12 transactions per account."""
    bank = load_demo_bank(DEMO_BANK)

    assert len(bank.customers) == 3
    for customer in bank.customers:
        assert customer.phone_e164.startswith("+1555555")
        assert 1 <= len(customer.accounts) <= 3
        assert 1 <= len(customer.cards) <= 2
        for account in customer.accounts:
            assert account.currency == "USD"
            assert 5 <= len(account.transactions) <= 12


def test_seed_is_idempotent(engine: sa.Engine) -> None:
    """The first seed adds the whole bank; a second one adds and changes nothing."""
    bank = load_demo_bank(DEMO_BANK)
    expected = SeedSummary(
        customers_created=3,
        accounts_created=sum(len(c.accounts) for c in bank.customers),
        cards_created=sum(len(c.cards) for c in bank.customers),
        transactions_created=sum(len(a.transactions) for c in bank.customers for a in c.accounts),
    )

    first = seed_demo_bank(engine, DEMO_BANK)
    counts_after_first = _counts(engine)
    second = seed_demo_bank(engine, DEMO_BANK)

    assert first == expected
    assert second == SeedSummary()
    assert (
        _counts(engine)
        == counts_after_first
        == {
            "customers": 3,
            "accounts": expected.accounts_created,
            "cards": expected.cards_created,
            "transactions": expected.transactions_created,
        }
    )


def test_seeded_pins_are_hashed_and_verify(engine: sa.Engine) -> None:
    """Seeded customers get a PBKDF2 hash of their demo PIN, never the PIN itself."""
    seed_demo_bank(engine, DEMO_BANK)

    with engine.connect() as conn:
        pin_hash = conn.execute(
            sa.select(tables.customers.c.pin_hash).where(
                tables.customers.c.phone_e164 == "+15555550101"
            )
        ).scalar_one()

    assert pin_hash.startswith("pbkdf2_sha256$200000$")
    assert verify_pin("1234", pin_hash)
    assert not verify_pin("4321", pin_hash)


def test_seeded_transactions_are_in_the_recent_past(engine: sa.Engine) -> None:
    """Transaction dates are days before the seeding day, timezone-aware, none in the future."""
    seed_demo_bank(engine, DEMO_BANK)

    with engine.connect() as conn:
        posted = conn.execute(sa.select(tables.transactions.c.posted_at)).scalars().all()

    now = datetime.now(UTC)
    assert all(p.tzinfo is UTC for p in posted)
    assert all(now - timedelta(days=120) < p < now for p in posted)


def test_seed_completes_a_customer_created_by_a_first_call(engine: sa.Engine) -> None:
    """A caller who rang before the seed keeps their row and gains the demo name and PIN."""
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.customers).values(phone_e164="+15555550102"))

    summary = seed_demo_bank(engine, DEMO_BANK)

    assert (summary.customers_created, summary.customers_updated) == (2, 1)
    with engine.connect() as conn:
        name, pin_hash = conn.execute(
            sa.select(tables.customers.c.full_name, tables.customers.c.pin_hash).where(
                tables.customers.c.phone_e164 == "+15555550102"
            )
        ).one()
    assert name == "James Okafor"
    assert verify_pin("2468", pin_hash)


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        json.dumps({"customers": "none"}),
        json.dumps({"customers": [{"phone_e164": "+15555550101"}]}),
        json.dumps(
            {
                "customers": [
                    {
                        "phone_e164": "555-0101",
                        "full_name": "X",
                        "pin": "1234",
                        "accounts": [],
                        "cards": [],
                    }
                ]
            }
        ),
    ],
)
def test_malformed_seed_files_are_config_errors(tmp_path: Path, document: str) -> None:
    """A seed file that is not a demo bank fails with a ConfigError naming the file."""
    path = tmp_path / "bank.json"
    path.write_text(document, encoding="utf-8")

    with pytest.raises(ConfigError, match=r"bank\.json"):
        load_demo_bank(path)


def test_missing_seed_file_is_a_config_error(tmp_path: Path) -> None:
    """Seeding from a file that does not exist is a ConfigError."""
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_demo_bank(tmp_path / "missing.json")


def _paying_cards(engine: sa.Engine) -> dict[str, str | None]:
    """Each transaction's description and the last four digits of the card that paid it."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tables.transactions.c.description, tables.cards.c.last4).outerjoin(
                tables.cards, tables.cards.c.id == tables.transactions.c.card_id
            )
        ).all()
    return {str(row[0]): row[1] for row in rows}


def test_card_payments_name_the_card_that_paid(engine: sa.Engine) -> None:
    """A card payment in the seed names its card (transactions.card_id); a transfer none."""
    seed_demo_bank(engine, DEMO_BANK)
    paid = _paying_cards(engine)
    assert paid["Blue Bottle Coffee"] == "2207"  # Maya's debit card on checking 4821
    assert paid["Amazon.com"] == "9904"  # her credit card
    assert paid["Rent - Parkview Apartments"] is None
    assert paid["Payroll deposit - Northwind Labs"] is None


def test_a_reseed_fills_in_the_card_of_an_older_seed(engine: sa.Engine) -> None:
    """A bank seeded before transactions.card_id existed gets its cards on the next seed, and
    nothing is duplicated."""
    seed_demo_bank(engine, DEMO_BANK)
    with engine.begin() as conn:
        conn.execute(sa.update(tables.transactions).values(card_id=None))
    before = _counts(engine)

    seed_demo_bank(engine, DEMO_BANK)

    assert _counts(engine) == before
    assert _paying_cards(engine)["Blue Bottle Coffee"] == "2207"


@pytest.mark.parametrize(
    ("card", "problem"), [("1111", "unknown card 1111"), ("9904", "does not draw on account")]
)
def test_a_transaction_naming_a_wrong_card_is_a_config_error(
    tmp_path: Path, card: str, problem: str
) -> None:
    """A payment's card must be the customer's, and draw on the account that paid."""
    document = json.loads(DEMO_BANK.read_text(encoding="utf-8"))
    document["customers"][0]["accounts"][0]["transactions"][0]["card"] = card
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ConfigError, match=problem):
        load_demo_bank(path)
