"""The ``BankStore`` port on SQLAlchemy Core: the bank tools' reads and the card freeze.

Layer: database adapter. Same shape as ``archer.db.store``: each async method hands exactly one
short unit of work (one connection, one transaction) to a worker thread behind a
``trio.CapacityLimiter``, and waits for it.

Rules:

- Every query is scoped by ``customer_id``: a caller can never read or change another
  customer's account or card, whatever ``last4`` they say.
- The store can share its engine and limiter with ``SqlCallStore`` (``from_call_store``), so
  call and bank work queue for the same pool behind one gate.
- Threads are never abandoned on cancellation (a freeze the caller gave up on could still
  commit); the driver timeouts bound how long that can take.
- Every SQLAlchemy error (and ``OSError``) becomes ``StoreError``; failures are logged once, at
  warning, on the trio side, successes at debug from inside the thread (so the caller's bound
  contextvars appear on them). PIN hashes are never logged.
- PIN lock-out (``pin_lock``, ``record_pin_failure``): failures are rows in ``pin_failures``
  stamped and windowed by the database's own clock (never a host clock), and a failure is
  counted under the customer's row lock (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
  SQLite), so N instances counting at once can never let a sixth guess slip through.
- ``set_card_status`` reads and writes in one transaction holding the row (``FOR UPDATE`` on
  PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so concurrent freezes of one card report one
  change, and a card already in the asked-for status is not written at all.

Size (just over 400 lines, on purpose): one class implementing one port (``archer.bank.ports``);
its statements share the customer scoping and the row-locking rules above.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, Self, TypeVar, TypeVarTuple, cast, get_args

import attrs
import sqlalchemy as sa
import structlog
import trio

from archer.bank.ports import (
    Account,
    AccountType,
    CardChange,
    CardStatus,
    PinLock,
    PinPolicy,
    Transaction,
)
from archer.db.clock import db_now
from archer.db.engine import make_engine, pool_capacity
from archer.db.tables import (
    UtcDateTime,
    accounts,
    cards,
    customers,
    pin_failures,
    pin_lockouts,
    transactions,
)
from archer.db.threads import DbObserver, run_in_thread
from archer.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from archer.bank.ports import BankStore
    from archer.db.store import SqlCallStore

__all__ = ["SqlBankStore"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: Bounds on ``recent_transactions``' limit, whatever the caller asks for.
MIN_TRANSACTIONS: Final = 1
MAX_TRANSACTIONS: Final = 50

_ACCOUNT_TYPES: Final[tuple[str, ...]] = get_args(AccountType)
_CARD_STATUSES: Final[tuple[str, ...]] = get_args(CardStatus)
_SETTABLE_STATUSES: Final = ("active", "frozen")


@attrs.frozen(slots=True)
class SqlBankStore:
    """``BankStore`` backed by a SQLAlchemy engine, one worker thread per unit of work.

    Build it with ``SqlBankStore.from_call_store(store)`` to share the call store's engine and
    limiter, or ``from_engine(engine, limiter)`` / ``open(url, pool_size)``.
    """

    _engine: sa.Engine
    #: Gates the worker threads; share the call store's so both queue for the same pool.
    _limiter: trio.CapacityLimiter
    #: The metrics hook, the call store's when built ``from_call_store``.
    _observe: DbObserver | None = None

    @classmethod
    def open(cls, url: str, pool_size: int) -> Self:
        """A store on a new engine for ``url`` (does not connect); ``aclose`` it at shutdown.

        Raises:
            ConfigError: the URL is malformed or unsupported.
        """
        engine = make_engine(url, pool_size=pool_size)
        return cls.from_engine(engine, trio.CapacityLimiter(pool_capacity(engine)))

    @classmethod
    def from_engine(cls, engine: sa.Engine, limiter: trio.CapacityLimiter) -> Self:
        """A store on an existing engine, gated by ``limiter`` (size it to the pool)."""
        return cls(engine, limiter)

    @classmethod
    def from_call_store(cls, store: SqlCallStore) -> Self:
        """A store sharing ``store``'s engine, limiter and metrics hook (closing stays with
        ``store``)."""
        return cls(store.engine, store.limiter, store.observe)

    @property
    def engine(self) -> sa.Engine:
        """The engine, for sync callers in their own thread (seeding, tests)."""
        return self._engine

    # --- BankStore ------------------------------------------------------------------------

    async def pin_hash(self, customer_id: int) -> str | None:
        """The customer's stored PIN hash (None: no PIN set, or no such customer).

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("pin_hash", self._pin_hash_sync, customer_id)

    async def pin_lock(self, customer_id: int) -> PinLock:
        """Whether the customer's PIN verification is locked out now.

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("pin_lock", self._pin_lock_sync, customer_id)

    async def record_pin_failure(
        self, customer_id: int, call_sid: str, policy: PinPolicy
    ) -> PinLock:
        """Record one failed verification; the state it leaves (see ``BankStore``).

        Raises:
            StoreError: the database is unavailable (nothing was recorded).
        """
        return await self._run(
            "record_pin_failure", self._record_pin_failure_sync, customer_id, call_sid, policy
        )

    async def accounts(self, customer_id: int, account_type: AccountType | None) -> list[Account]:
        """The customer's accounts, of one type if given, ordered by type then last4.

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("accounts", self._accounts_sync, customer_id, account_type)

    async def recent_transactions(
        self, customer_id: int, account_type: AccountType | None, limit: int
    ) -> list[Transaction]:
        """The customer's newest transactions first, across matching accounts, at most ``limit``
        (clamped to 1..50).

        Raises:
            StoreError: the database is unavailable.
        """
        bounded = min(max(limit, MIN_TRANSACTIONS), MAX_TRANSACTIONS)
        return await self._run(
            "recent_transactions", self._transactions_sync, customer_id, account_type, bounded
        )

    async def set_card_status(
        self, customer_id: int, last4: str, status: Literal["active", "frozen"]
    ) -> CardChange | None:
        """Set the customer's card ending ``last4`` to ``status``; idempotent.

        A ``lost`` card is never changed; None when the customer has no such card.
        ``cards.updated_at`` moves only on a change.

        Raises:
            ValueError: ``status`` is neither ``active`` nor ``frozen``.
            StoreError: the database is unavailable.
        """
        if status not in _SETTABLE_STATUSES:
            raise ValueError(f"a card can only be set active or frozen, not {status!r}")
        return await self._run(
            "set_card_status", self._set_card_status_sync, customer_id, last4, status
        )

    # --- beyond the port ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every pooled connection: only for a store built with ``open`` (a store sharing
        the call store's engine leaves that to the call store)."""
        await trio.to_thread.run_sync(self._engine.dispose)

    # --- the trio/thread boundary ---------------------------------------------------------

    async def _run(self, operation: str, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await run_in_thread(
            operation, fn, *args, limiter=self._limiter, observe=self._observe
        )

    # --- units of work (each runs in a worker thread) ------------------------------------

    def _pin_hash_sync(self, customer_id: int) -> str | None:
        with self._engine.begin() as conn:
            pin_hash: str | None = conn.execute(
                sa.select(customers.c.pin_hash).where(customers.c.id == customer_id)
            ).scalar_one_or_none()
        log.debug("db.pin_hash_read", customer_id=customer_id, has_pin=pin_hash is not None)
        return pin_hash

    def _pin_lock_sync(self, customer_id: int) -> PinLock:
        with self._engine.begin() as conn:
            locked_until = _locked_until(conn, customer_id, _database_now(conn))
        return PinLock(locked=locked_until is not None, locked_until=locked_until)

    def _record_pin_failure_sync(
        self, customer_id: int, call_sid: str, policy: PinPolicy
    ) -> PinLock:
        with self._engine.begin() as conn:
            # The customer's row is the lock that serialises their verifications, whichever
            # instance runs them (SQLite's BEGIN IMMEDIATE already holds the database).
            known = conn.execute(
                sa.select(customers.c.id).where(customers.c.id == customer_id).with_for_update()
            ).scalar_one_or_none()
            if known is None:
                return PinLock(locked=False)
            now = _database_now(conn)
            locked_until = _locked_until(conn, customer_id, now)
            if locked_until is not None:
                # A guess while locked is refused before the PIN is looked at: not a failure.
                return PinLock(locked=True, locked_until=locked_until)
            conn.execute(
                sa.insert(pin_failures).values(
                    customer_id=customer_id, call_sid=call_sid, failed_at=now
                )
            )
            window = timedelta(seconds=policy.lockout_seconds)
            failures: int = conn.execute(
                sa.select(sa.func.count())
                .select_from(pin_failures)
                .where(
                    pin_failures.c.customer_id == customer_id,
                    pin_failures.c.failed_at > now - window,
                )
            ).scalar_one()
            if failures < policy.max_failures:
                log.debug("db.pin_failure_recorded", customer_id=customer_id, failures=failures)
                return PinLock(locked=False, failures=failures)
            until = now + window
            conn.execute(
                sa.insert(pin_lockouts).values(
                    customer_id=customer_id,
                    call_sid=call_sid,
                    failures=failures,
                    locked_at=now,
                    locked_until=until,
                )
            )
        log.warning("db.pin_locked_out", customer_id=customer_id, failures=failures)
        return PinLock(locked=True, failures=failures, locked_until=until, newly_locked=True)

    def _accounts_sync(self, customer_id: int, account_type: AccountType | None) -> list[Account]:
        stmt = (
            sa.select(
                accounts.c.kind,
                accounts.c.last4,
                accounts.c.balance_cents,
                accounts.c.currency,
                accounts.c.status,
            )
            .where(accounts.c.customer_id == customer_id)
            .order_by(accounts.c.kind, accounts.c.last4)
        )
        if account_type is not None:
            stmt = stmt.where(accounts.c.kind == account_type)
        with self._engine.begin() as conn:
            rows = conn.execute(stmt).all()
        log.debug(
            "db.accounts_read", customer_id=customer_id, account_type=account_type, count=len(rows)
        )
        return [
            Account(
                account_type=_account_type(row.kind),
                last4=row.last4,
                balance_cents=row.balance_cents,
                currency=row.currency,
                status=row.status,
            )
            for row in rows
        ]

    def _transactions_sync(
        self, customer_id: int, account_type: AccountType | None, limit: int
    ) -> list[Transaction]:
        stmt = (
            sa.select(
                accounts.c.kind,
                accounts.c.last4,
                accounts.c.currency,
                transactions.c.posted_at,
                transactions.c.amount_cents,
                transactions.c.description,
            )
            .select_from(transactions.join(accounts, transactions.c.account_id == accounts.c.id))
            .where(accounts.c.customer_id == customer_id)
            # id breaks ties between same-instant postings (a transfer's two legs) stably.
            .order_by(transactions.c.posted_at.desc(), transactions.c.id.desc())
            .limit(limit)
        )
        if account_type is not None:
            stmt = stmt.where(accounts.c.kind == account_type)
        with self._engine.begin() as conn:
            rows = conn.execute(stmt).all()
        log.debug(
            "db.transactions_read",
            customer_id=customer_id,
            account_type=account_type,
            limit=limit,
            count=len(rows),
        )
        return [
            Transaction(
                account_type=_account_type(row.kind),
                account_last4=row.last4,
                posted_at=row.posted_at,
                amount_cents=row.amount_cents,
                currency=row.currency,
                description=row.description,
            )
            for row in rows
        ]

    def _set_card_status_sync(
        self, customer_id: int, last4: str, status: Literal["active", "frozen"]
    ) -> CardChange | None:
        owned = (cards.c.customer_id == customer_id, cards.c.last4 == last4)
        with self._engine.begin() as conn:
            # FOR UPDATE holds the row on PostgreSQL until commit (SQLite ignores it: its
            # BEGIN IMMEDIATE already holds the write lock), so a racing twin reads our result.
            current: str | None = conn.execute(
                sa.select(cards.c.status).where(*owned).with_for_update()
            ).scalar_one_or_none()
            if current is None:
                log.debug("db.card_not_found", customer_id=customer_id)
                return None
            previous = _card_status(current)
            if previous in ("lost", status):
                log.debug(
                    "db.card_unchanged", customer_id=customer_id, last4=last4, status=previous
                )
                return CardChange(last4=last4, previous_status=previous, status=previous)
            # The guard repeats the decision in the write itself: even without the row lock, a
            # card reported lost meanwhile is never revived.
            updated: str | None = conn.execute(
                sa.update(cards)
                .where(*owned, cards.c.status == previous)
                .values(status=status, updated_at=db_now())  # the database's clock, as everywhere
                .returning(cards.c.status)
            ).scalar_one_or_none()
            if updated is None:
                # Unreachable under the lock; without it, answer as for any card we left alone.
                now = _card_status(
                    conn.execute(sa.select(cards.c.status).where(*owned)).scalar_one()
                )
                log.debug("db.card_changed_meanwhile", customer_id=customer_id, status=now)
                return CardChange(last4=last4, previous_status=now, status=now)
        log.debug(
            "db.card_status_set",
            customer_id=customer_id,
            last4=last4,
            previous_status=previous,
            status=status,
        )
        return CardChange(last4=last4, previous_status=previous, status=status)


if TYPE_CHECKING:

    def _implements_the_port(store: SqlBankStore) -> BankStore:
        # mypy proves here that SqlBankStore satisfies the BankStore protocol.
        return store


# --- PIN lock-out helpers (inside a unit of work) ---------------------------------------------


def _database_now(conn: sa.Connection) -> datetime:
    """The database's clock: it alone decides PIN windows, whichever host asks."""
    now: datetime = conn.execute(sa.select(sa.func.now(type_=UtcDateTime()))).scalar_one()
    return now


def _locked_until(conn: sa.Connection, customer_id: int, now: datetime) -> datetime | None:
    """The end of the customer's lock-out in force at ``now``, or None."""
    until: datetime | None = conn.execute(
        sa.select(sa.func.max(pin_lockouts.c.locked_until)).where(
            pin_lockouts.c.customer_id == customer_id, pin_lockouts.c.locked_until > now
        )
    ).scalar_one()
    return until


# --- rows -> records (pure) -----------------------------------------------------------------


def _account_type(value: str) -> AccountType:
    # The column's CHECK makes anything else impossible; this narrows the type for mypy.
    if value not in _ACCOUNT_TYPES:
        raise StoreError(f"accounts.kind holds {value!r}, which is not an account type")
    return cast("AccountType", value)


def _card_status(value: str) -> CardStatus:
    # The column's CHECK makes anything else impossible; this narrows the type for mypy.
    if value not in _CARD_STATUSES:
        raise StoreError(f"cards.status holds {value!r}, which is not a card status")
    return cast("CardStatus", value)
