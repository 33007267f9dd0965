"""The demo bank: customers, accounts, cards and transactions from ``archer/data/demo_bank.json``.

Layer: database adapter (sync SQLAlchemy; blocks). ``archer db seed`` and ``archer demo`` call
``seed_demo_bank`` from a worker thread or before trio starts.

Rules: seeding is idempotent and only ever adds. Customers are keyed by phone number, accounts
and cards by (customer, last4), transactions by (account, posted_at, description); a row that
exists is left alone, except that a customer created by a first call gets the seed's name and
PIN where it has none, and a transaction seeded before ``card_id`` existed gets its card. PINs
in the file are hashed on load and never stored or logged in clear. Transaction dates are
``days_ago`` days before the day the customer was first stored, so a re-seed on a later day
computes the same timestamps and duplicates nothing.
"""

from __future__ import annotations

import importlib.resources
import json
from datetime import UTC, datetime, time, timedelta
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import attrs
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from archer.bank.pins import hash_pin
from archer.db.tables import accounts, cards, customers, transactions
from archer.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DemoBank", "SeedSummary", "load_demo_bank", "seed_demo_bank"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


#: The demo bank shipped in the package (``archer db seed`` and ``archer demo`` load it), read
#: with importlib.resources so an installed Archer finds it from any working directory.
DEMO_BANK: Final[Traversable] = importlib.resources.files("archer") / "data" / "demo_bank.json"


@attrs.frozen(slots=True)
class SeedTransaction:
    days_ago: int
    #: Time of day in UTC.
    at: time
    amount_cents: int
    description: str
    #: The ``last4`` of the customer's card that made the payment (None: no card, e.g. a transfer).
    card_last4: str | None = None


@attrs.frozen(slots=True)
class SeedAccount:
    kind: str
    last4: str
    balance_cents: int
    currency: str
    status: str
    transactions: tuple[SeedTransaction, ...]


@attrs.frozen(slots=True)
class SeedCard:
    last4: str
    #: The ``last4`` of the customer's account the card draws on.
    account_last4: str
    status: str


@attrs.frozen(slots=True)
class SeedCustomer:
    phone_e164: str
    full_name: str
    #: Clear-text demo PIN; hashed before it reaches the database.
    pin: str = attrs.field(repr=False)
    accounts: tuple[SeedAccount, ...]
    cards: tuple[SeedCard, ...]


@attrs.frozen(slots=True)
class DemoBank:
    customers: tuple[SeedCustomer, ...]


@attrs.frozen(slots=True)
class SeedSummary:
    """How many rows one seeding added (all zero when the bank was already seeded)."""

    customers_created: int = 0
    customers_updated: int = 0
    accounts_created: int = 0
    cards_created: int = 0
    transactions_created: int = 0


def seed_demo_bank(engine: sa.Engine, path: str | Traversable = DEMO_BANK) -> SeedSummary:
    """Add whatever of the demo bank at ``path`` the database lacks, in one transaction.

    Raises:
        ConfigError: the seed file is missing or malformed.
        StoreError: the database is unavailable or refused a row.
    """
    bank = load_demo_bank(path)
    counts = _Counts()
    try:
        with engine.begin() as conn:
            for customer in bank.customers:
                _seed_customer(conn, customer, counts)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not seed the demo bank: {exc}") from exc
    summary = counts.summary()
    log.info("db.demo_bank_seeded", **attrs.asdict(summary))
    return summary


def load_demo_bank(path: str | Traversable = DEMO_BANK) -> DemoBank:
    """Parse and check a demo-bank JSON file (a path, or a resource such as ``DEMO_BANK``).

    Raises:
        ConfigError: the file is missing, not JSON, or not shaped like a demo bank.
    """
    try:
        source = Path(path) if isinstance(path, str) else path
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"demo bank {path}: {exc}") from exc
    try:
        return _parse_bank(document)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"demo bank {path}: {exc}") from exc


# --- writing --------------------------------------------------------------------------------


@attrs.define
class _Counts:
    customers_created: int = 0
    customers_updated: int = 0
    accounts_created: int = 0
    cards_created: int = 0
    transactions_created: int = 0

    def summary(self) -> SeedSummary:
        return SeedSummary(**attrs.asdict(self))


def _seed_customer(conn: sa.Connection, customer: SeedCustomer, counts: _Counts) -> None:
    row = conn.execute(
        sa.select(
            customers.c.id, customers.c.full_name, customers.c.pin_hash, customers.c.created_at
        ).where(customers.c.phone_e164 == customer.phone_e164)
    ).first()
    if row is None:
        created = conn.execute(
            sa.insert(customers)
            .values(
                phone_e164=customer.phone_e164,
                full_name=customer.full_name,
                pin_hash=hash_pin(customer.pin),
            )
            .returning(customers.c.id, customers.c.created_at)
        ).one()
        customer_id, created_at = created.id, created.created_at
        counts.customers_created += 1
    else:
        customer_id, created_at = row.id, row.created_at
        # A caller who rang before the seed exists without a name or PIN: complete them, but
        # never overwrite what the bank (or a PIN change) has set since.
        fill: dict[str, object] = {}
        if row.full_name is None:
            fill["full_name"] = customer.full_name
        if row.pin_hash is None:
            fill["pin_hash"] = hash_pin(customer.pin)
        if fill:
            conn.execute(sa.update(customers).where(customers.c.id == customer_id).values(fill))
            counts.customers_updated += 1

    account_ids: dict[str, int] = {}
    for account in customer.accounts:
        account_ids[account.last4] = _seed_account(conn, customer_id, account, counts)
    # Cards before transactions: a payment names the card that made it (transactions.card_id).
    card_ids = {
        card.last4: _seed_card(conn, customer_id, account_ids[card.account_last4], card, counts)
        for card in customer.cards
    }
    for account in customer.accounts:
        _seed_transactions(conn, account_ids[account.last4], account, created_at, card_ids, counts)


def _seed_account(
    conn: sa.Connection, customer_id: int, account: SeedAccount, counts: _Counts
) -> int:
    existing: int | None = conn.execute(
        sa.select(accounts.c.id).where(
            accounts.c.customer_id == customer_id, accounts.c.last4 == account.last4
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    counts.accounts_created += 1
    created: int = conn.execute(
        sa.insert(accounts)
        .values(
            customer_id=customer_id,
            kind=account.kind,
            last4=account.last4,
            balance_cents=account.balance_cents,
            currency=account.currency,
            status=account.status,
        )
        .returning(accounts.c.id)
    ).scalar_one()
    return created


def _seed_card(
    conn: sa.Connection, customer_id: int, account_id: int, card: SeedCard, counts: _Counts
) -> int:
    existing: int | None = conn.execute(
        sa.select(cards.c.id).where(cards.c.customer_id == customer_id, cards.c.last4 == card.last4)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    counts.cards_created += 1
    created: int = conn.execute(
        sa.insert(cards)
        .values(
            customer_id=customer_id, account_id=account_id, last4=card.last4, status=card.status
        )
        .returning(cards.c.id)
    ).scalar_one()
    return created


def _seed_transactions(
    conn: sa.Connection,
    account_id: int,
    account: SeedAccount,
    customer_created_at: datetime,
    card_ids: Mapping[str, int],
    counts: _Counts,
) -> None:
    # Anchor on the day the customer was first stored, not on today: the same seed file then
    # yields the same posted_at on every run, which is what makes the key below stable.
    anchor = customer_created_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    present = {
        (row.posted_at, row.description): (row.id, row.card_id)
        for row in conn.execute(
            sa.select(
                transactions.c.id,
                transactions.c.posted_at,
                transactions.c.description,
                transactions.c.card_id,
            ).where(transactions.c.account_id == account_id)
        )
    }
    missing = []
    for item in account.transactions:
        posted_at = anchor - timedelta(days=item.days_ago) + _since_midnight(item.at)
        card_id = None if item.card_last4 is None else card_ids[item.card_last4]
        found = present.get((posted_at, item.description))
        if found is None:
            present[(posted_at, item.description)] = (None, card_id)
            missing.append(
                {
                    "account_id": account_id,
                    "posted_at": posted_at,
                    "amount_cents": item.amount_cents,
                    "description": item.description,
                    "card_id": card_id,
                }
            )
        elif found[0] is not None and found[1] is None and card_id is not None:
            # Seeded before transactions.card_id existed: fill in the card, as a name or PIN
            # is filled in for a customer who has none; a card already set is left alone.
            conn.execute(
                sa.update(transactions).where(transactions.c.id == found[0]).values(card_id=card_id)
            )
    if missing:
        conn.execute(sa.insert(transactions), missing)
        counts.transactions_created += len(missing)


def _since_midnight(at: time) -> timedelta:
    return timedelta(hours=at.hour, minutes=at.minute, seconds=at.second)


# --- parsing --------------------------------------------------------------------------------


def _parse_bank(document: object) -> DemoBank:
    top = _mapping(document, "the document")
    customers_json = _field(top, "customers", list, "the document")
    parsed = tuple(
        _parse_customer(_mapping(item, f"customers[{i}]"), f"customers[{i}]")
        for i, item in enumerate(customers_json)
    )
    phones = [customer.phone_e164 for customer in parsed]
    if len(set(phones)) != len(phones):
        raise ValueError("two customers share a phone number")
    return DemoBank(customers=parsed)


def _parse_customer(obj: Mapping[str, object], where: str) -> SeedCustomer:
    phone = _field(obj, "phone_e164", str, where)
    if not (phone.startswith("+") and phone[1:].isascii() and phone[1:].isdigit()):
        raise ValueError(f"{where}.phone_e164 {phone!r} is not an E.164 number")
    pin = _field(obj, "pin", str, where)
    if not (len(pin) == 4 and pin.isascii() and pin.isdigit()):
        raise ValueError(f"{where}.pin must be four digits")
    account_list = [
        _parse_account(_mapping(item, f"{where}.accounts[{i}]"), f"{where}.accounts[{i}]")
        for i, item in enumerate(_field(obj, "accounts", list, where))
    ]
    card_list = [
        _parse_card(_mapping(item, f"{where}.cards[{i}]"), f"{where}.cards[{i}]")
        for i, item in enumerate(_field(obj, "cards", list, where))
    ]
    known = {account.last4 for account in account_list}
    for card in card_list:
        if card.account_last4 not in known:
            raise ValueError(
                f"{where}: card {card.last4} names unknown account {card.account_last4}"
            )
    card_accounts = {card.last4: card.account_last4 for card in card_list}
    for account in account_list:
        for item in account.transactions:
            if item.card_last4 is None:
                continue
            if item.card_last4 not in card_accounts:
                raise ValueError(f"{where}: a transaction names unknown card {item.card_last4}")
            if card_accounts[item.card_last4] != account.last4:
                raise ValueError(
                    f"{where}: card {item.card_last4} does not draw on account {account.last4}"
                )
    return SeedCustomer(
        phone_e164=phone,
        full_name=_field(obj, "full_name", str, where),
        pin=pin,
        accounts=tuple(account_list),
        cards=tuple(card_list),
    )


def _parse_account(obj: Mapping[str, object], where: str) -> SeedAccount:
    return SeedAccount(
        kind=_field(obj, "kind", str, where),
        last4=_last4(_field(obj, "last4", str, where), where),
        balance_cents=_field(obj, "balance_cents", int, where),
        currency=_field(obj, "currency", str, where),
        status=_field(obj, "status", str, where),
        transactions=tuple(
            _parse_transaction(
                _mapping(item, f"{where}.transactions[{i}]"), f"{where}.transactions[{i}]"
            )
            for i, item in enumerate(_field(obj, "transactions", list, where))
        ),
    )


def _parse_card(obj: Mapping[str, object], where: str) -> SeedCard:
    return SeedCard(
        last4=_last4(_field(obj, "last4", str, where), where),
        account_last4=_field(obj, "account_last4", str, where),
        status=_field(obj, "status", str, where),
    )


def _parse_transaction(obj: Mapping[str, object], where: str) -> SeedTransaction:
    days_ago = _field(obj, "days_ago", int, where)
    # At least a day back: with a time of day, "today" could land after the moment of seeding.
    if days_ago < 1:
        raise ValueError(f"{where}.days_ago must be at least 1")
    card = _last4(_field(obj, "card", str, where), where) if "card" in obj else None
    return SeedTransaction(
        days_ago=days_ago,
        at=time.fromisoformat(_field(obj, "time", str, where)),
        amount_cents=_field(obj, "amount_cents", int, where),
        description=_field(obj, "description", str, where),
        card_last4=card,
    )


def _last4(value: str, where: str) -> str:
    if not (len(value) == 4 and value.isascii() and value.isdigit()):
        raise ValueError(f"{where}.last4 must be four digits, not {value!r}")
    return value


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be an object")
    return value


def _field(obj: Mapping[str, object], key: str, kind: type[_T], where: str) -> _T:
    if key not in obj:
        raise ValueError(f"{where}.{key} is missing")
    value = obj[key]
    # bool is an int in Python, but true is never a number of cents.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{where}.{key} must be {kind.__name__}, not {type(value).__name__}")
    return value
