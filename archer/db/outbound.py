"""The outbound queue in the database: API keys, requests, attempts, and the shared pace.

Layer: database adapter (SQLAlchemy Core in worker threads, like ``archer.db.store``).

Rules:

- **Keys.** Only the SHA-256 hex of an API key is stored (``api_keys.key_hash``); a key is 256
  random bits, so a plain hash cannot be searched backwards. ``create_key`` returns the key once.
- **Requests.** ``enqueue`` writes one ``outbound_requests`` row; with an ``Idempotency-Key``
  the unique ``(api_key_id, idempotency_key)`` makes a repeat (even a racing one on another
  instance) find the first row instead of adding one.
- **Claims.** ``claim`` is one transaction: lock the single ``outbound_pacing`` row (every
  instance's dispatcher queues on that lock), refuse if the database's now is before
  ``next_send_at``, outside the calling window, or with ``OUTBOUND_MAX_ACTIVE`` requests already
  dialing or in progress; else take the oldest due ``queued`` request (``FOR UPDATE SKIP
  LOCKED`` on PostgreSQL; SQLite serves one instance and serialises writers itself), mark it
  ``dialing``, write its attempt row, and move ``next_send_at`` to the database's clock plus
  ``1/OUTBOUND_CPS``. So the spacing is decided by one clock and one row, whatever the number of
  instances. The window is judged on the database's now, read in the same transaction.
- **Exactly once.** A claimed attempt names its instance; the Calls API request is made only by
  that instance, after the claim committed, and its CallSid is written back (``attempt_placed``).
  An attempt whose instance died before writing a CallSid is not redialled blindly: whether
  Twilio placed it is unknown, so ``abandon_lost`` ends it (``outcome=instance_lost``) and fails
  the request, and the bank decides. A bank alert rung twice is worse than one not rung.
- Nothing here reads a host's clock (``archer.db.clock``).

Size (over 400 lines, on purpose): one class implements the outbound ports, and the claim
transaction above reads and writes every one of these tables (the pace, the requests, the
attempts, what is in progress) under one lock; the keys, the requests' API answers and the
callbacks' updates share its row shapes and its rules. Split apart, the exactly-once argument
would have to be read across files.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeVar, TypeVarTuple

import attrs
import sqlalchemy as sa
import trio
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from archer.call.outbound import (
    ALWAYS,
    Attempt,
    CallingWindow,
    CallRequest,
    Claim,
    QueuedCall,
    RequestView,
    UnknownTransactionError,
)
from archer.db.clock import db_clock_now, db_now
from archer.db.engine import make_engine, pool_capacity
from archer.db.tables import (
    api_keys,
    calls,
    instances,
    outbound_attempts,
    outbound_pacing,
    outbound_requests,
    transactions,
)
from archer.db.threads import run_in_thread
from archer.errors import ArcherError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

__all__ = [
    "ACTIVE_STATUSES",
    "ApiKey",
    "KeyNameTakenError",
    "SqlOutbound",
    "hash_key",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: A request in one of these counts against OUTBOUND_MAX_ACTIVE.
ACTIVE_STATUSES: Final = ("dialing", "in_progress")
#: Outcomes of an attempt that are worth another try after OUTBOUND_RETRY_DELAY.
RETRYABLE_OUTCOMES: Final = frozenset({"no-answer", "busy", "failed"})
#: The prefix tells a reader (and a secret scanner) what the text is.
KEY_PREFIX: Final = "archer_"


class KeyNameTakenError(ArcherError):
    """``archer keys create NAME`` with a NAME already used (revoked keys keep theirs)."""


def hash_key(key: str) -> str:
    """The stored form of an API key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@attrs.frozen(slots=True)
class ApiKey:
    """An API key as ``archer keys list`` shows it: never the key, never its hash."""

    name: str
    created_at: datetime
    revoked_at: datetime | None


@attrs.define
class SqlOutbound:
    """The outbound queue on a SQLAlchemy engine; one worker thread per unit of work."""

    engine: sa.Engine
    limiter: trio.CapacityLimiter

    @classmethod
    def open(cls, url: str, pool_size: int = 2) -> Self:
        """On a new engine for ``url`` (does not connect). ``aclose``/``close`` disposes it."""
        engine = make_engine(url, pool_size=pool_size)
        return cls(engine, trio.CapacityLimiter(pool_capacity(engine)))

    def close(self) -> None:
        self.engine.dispose()

    async def _run(self, operation: str, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await run_in_thread(operation, fn, *args, limiter=self.limiter)

    # --- keys (sync: the CLI runs them outside trio; the route runs key_id in a thread) ---

    def create_key(self, name: str) -> str:
        """A new key named ``name``; only its hash is stored. The key is returned, once.

        Raises:
            KeyNameTakenError: a key (even a revoked one) already has that name.
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(api_keys).values(
                        name=name, key_hash=hash_key(key), created_at=db_now()
                    )
                )
        except IntegrityError:
            raise KeyNameTakenError(f"a key named {name!r} exists already") from None
        return key

    def revoke_key(self, name: str) -> bool:
        """Revoke the key named ``name``; False if there is no such live key.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=db_now())
            )
        return result.rowcount == 1

    def list_keys(self) -> list[ApiKey]:
        """Every key's name and dates, oldest first (never a key or a hash).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at).order_by(
                    api_keys.c.id
                )
            ).all()
        return [ApiKey(row.name, row.created_at, row.revoked_at) for row in rows]

    def _key_id_sync(self, key: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(api_keys.c.id).where(
                    api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
                )
            ).scalar_one_or_none()

    async def key_id(self, key: str) -> int | None:
        """The id of the live key ``key``; None if it is unknown or revoked.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the read finishes in its thread; nothing is written.
        """
        return await self._run("outbound_key", self._key_id_sync, key)

    # --- requests ---

    def enqueue_sync(
        self, request: CallRequest, *, api_key_id: int | None, idempotency_key: str | None
    ) -> QueuedCall:
        """Queue ``request`` (or find the request this idempotency key queued before).

        Raises:
            UnknownTransactionError: no such transaction (nothing is written).
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        if idempotency_key is not None:
            earlier = self._by_idempotency_key(api_key_id, idempotency_key)
            if earlier is not None:
                return earlier
        try:
            with self.engine.begin() as conn:
                known = conn.execute(
                    sa.select(transactions.c.id).where(transactions.c.id == request.transaction_id)
                ).scalar_one_or_none()
                if known is None:
                    raise UnknownTransactionError(
                        f"no transaction with id {request.transaction_id}"
                    )
                request_id = conn.execute(
                    sa.insert(outbound_requests)
                    .values(
                        api_key_id=api_key_id,
                        idempotency_key=idempotency_key,
                        to_number=request.to,
                        purpose=request.purpose,
                        transaction_id=request.transaction_id,
                        status="queued",
                        not_before=db_now(),
                        created_at=db_now(),
                        updated_at=db_now(),
                    )
                    .returning(outbound_requests.c.id)
                ).scalar_one()
        except IntegrityError:
            # The same key raced in on another instance and won: answer its request.
            if idempotency_key is None:
                raise
            earlier = self._by_idempotency_key(api_key_id, idempotency_key)
            if earlier is None:
                raise
            return earlier
        return QueuedCall(id=request_id, status="queued", created=True)

    def _by_idempotency_key(self, api_key_id: int | None, key: str) -> QueuedCall | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(outbound_requests.c.id).where(
                    outbound_requests.c.api_key_id == api_key_id,
                    outbound_requests.c.idempotency_key == key,
                )
            ).one_or_none()
        # The first answer was "queued", whatever the request's status is now.
        return None if row is None else QueuedCall(id=row.id, status="queued", created=False)

    async def enqueue(
        self, request: CallRequest, *, api_key_id: int | None, idempotency_key: str | None
    ) -> QueuedCall:
        """As ``enqueue_sync``, in a worker thread.

        Raises:
            UnknownTransactionError: no such transaction (nothing is written).
            StoreError: the database is unavailable.

        Cancellation: the transaction finishes in its thread; the request is queued or not.
        """
        return await self._run(
            "outbound_enqueue",
            lambda: self.enqueue_sync(
                request, api_key_id=api_key_id, idempotency_key=idempotency_key
            ),
        )

    def view_sync(self, request_id: int, *, api_key_id: int | None = None) -> RequestView | None:
        """The request and its attempts; None if there is none with that id.

        ``api_key_id``: only a request placed with that key is seen (None if another key placed
        it, exactly as if it did not exist); without it, any request (operators, the demo).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        r = outbound_requests.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    r.id, r.status, r.purpose, r.answered_by, r.end_reason, r.call_id, r.created_at
                ).where(
                    r.id == request_id,
                    sa.true() if api_key_id is None else r.api_key_id == api_key_id,
                )
            ).one_or_none()
            if row is None:
                return None
            a = outbound_attempts.c
            attempts = conn.execute(
                sa.select(a.attempt, a.call_sid, a.outcome, a.started_at, a.ended_at)
                .where(a.request_id == request_id)
                .order_by(a.attempt)
            ).all()
        return RequestView(
            id=row.id,
            status=row.status,
            purpose=row.purpose,
            answered_by=row.answered_by,
            end_reason=row.end_reason,
            call_id=row.call_id,
            created_at=row.created_at,
            attempts=tuple(Attempt(*attempt) for attempt in attempts),
        )

    async def view(self, request_id: int, *, api_key_id: int | None = None) -> RequestView | None:
        """As ``view_sync``, in a worker thread.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the read finishes in its thread; nothing is written.
        """
        return await self._run(
            "outbound_view", lambda: self.view_sync(request_id, api_key_id=api_key_id)
        )

    # --- the dispatcher's statements ---

    def claim_sync(
        self,
        instance_id: str,
        *,
        cps: float,
        max_active: int,
        window: CallingWindow = ALWAYS,
    ) -> Claim | None:
        """Claim the next due request for ``instance_id`` if the pace, window and cap allow.

        None: nothing due, or not now (before the next send time, outside the window, at the
        cap). See the module's rules.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        r = outbound_requests.c
        with self.engine.begin() as conn:
            self._ensure_pacing_row(conn)
            # Every dispatcher queues here: one claim at a time across all instances.
            pacing = conn.execute(
                sa.select(
                    outbound_pacing.c.next_send_at,
                    db_now().label("now"),
                )
                .where(outbound_pacing.c.id == 1)
                .with_for_update()
            ).one()
            # Measured after the lock was granted (now() is the transaction's start on
            # PostgreSQL, which may be long before it): the pace is judged at claim time.
            now = conn.execute(sa.select(db_clock_now())).scalar_one()
            if now < pacing.next_send_at or not window.contains(now):
                return None
            active = conn.execute(
                sa.select(sa.func.count()).where(r.status.in_(ACTIVE_STATUSES))
            ).scalar_one()
            if active >= max_active:
                return None
            row = conn.execute(
                sa.select(r.id, r.attempts, r.to_number, r.purpose, r.transaction_id)
                .where(r.status == "queued", r.not_before <= now)
                .order_by(r.not_before, r.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            attempt = row.attempts + 1
            conn.execute(
                sa.update(outbound_requests)
                .where(r.id == row.id)
                .values(status="dialing", attempts=attempt, claimed_by=instance_id, updated_at=now)
            )
            conn.execute(
                sa.insert(outbound_attempts).values(
                    request_id=row.id, attempt=attempt, instance_id=instance_id, started_at=now
                )
            )
            conn.execute(
                sa.update(outbound_pacing)
                .where(outbound_pacing.c.id == 1)
                .values(next_send_at=db_clock_now(1.0 / cps))
            )
        return Claim(
            request_id=row.id,
            attempt=attempt,
            to=row.to_number,
            purpose=row.purpose,
            transaction_id=row.transaction_id,
            claimed_at=now,
        )

    async def claim(
        self,
        instance_id: str,
        *,
        cps: float,
        max_active: int,
        window: CallingWindow = ALWAYS,
    ) -> Claim | None:
        """As ``claim_sync``, in a worker thread.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the transaction finishes in its thread; a claim it made is committed
        (the request is ``dialing`` under this instance), so the caller must not drop it.
        """
        return await self._run(
            "outbound_claim",
            lambda: self.claim_sync(instance_id, cps=cps, max_active=max_active, window=window),
        )

    def _ensure_pacing_row(self, conn: sa.Connection) -> None:
        exists = conn.execute(
            sa.select(outbound_pacing.c.id).where(outbound_pacing.c.id == 1)
        ).scalar_one_or_none()
        if exists is None:
            # Two instances' first claims may race to create it: the loser's insert is a no-op.
            insert = (
                postgresql.insert(outbound_pacing)
                if conn.dialect.name == "postgresql"
                else sqlite.insert(outbound_pacing)
            )
            conn.execute(
                insert.values(id=1, next_send_at=db_now(-1.0)).on_conflict_do_nothing(
                    index_elements=[outbound_pacing.c.id]
                )
            )

    def attempt_placed_sync(self, request_id: int, attempt: int, call_sid: str) -> None:
        """Twilio accepted the attempt: its CallSid is recorded.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        a = outbound_attempts.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(outbound_attempts)
                .where(a.request_id == request_id, a.attempt == attempt)
                .values(call_sid=call_sid)
            )

    async def attempt_placed(self, request_id: int, attempt: int, call_sid: str) -> None:
        """As ``attempt_placed_sync``, in a worker thread.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the update finishes in its thread.
        """
        await self._run("outbound_placed", self.attempt_placed_sync, request_id, attempt, call_sid)

    async def attempt_ended(
        self,
        request_id: int,
        attempt: int,
        outcome: str,
        *,
        retry_delay: float,
        max_attempts: int,
        answered_by: str | None = None,
        end_reason: str | None = None,
    ) -> str:
        """As ``attempt_ended_sync``, in a worker thread.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the transaction finishes in its thread.
        """
        return await self._run(
            "outbound_ended",
            lambda: self.attempt_ended_sync(
                request_id,
                attempt,
                outcome,
                retry_delay=retry_delay,
                max_attempts=max_attempts,
                answered_by=answered_by,
                end_reason=end_reason,
            ),
        )

    def attempt_ended_sync(
        self,
        request_id: int,
        attempt: int,
        outcome: str,
        *,
        retry_delay: float,
        max_attempts: int,
        answered_by: str | None = None,
        end_reason: str | None = None,
    ) -> str:
        """Record how an attempt ended; the request's new status.

        ``no-answer``, ``busy`` and ``failed`` queue it again after ``retry_delay`` seconds of
        the database's clock while fewer than ``max_attempts`` attempts were made; any other
        outcome finishes it (``completed`` for a call that was answered, else ``failed``).
        Repeating the same call is harmless: an attempt already ended is left as it was.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        a = outbound_attempts.c
        r = outbound_requests.c
        with self.engine.begin() as conn:
            ended = conn.execute(
                sa.update(outbound_attempts)
                .where(a.request_id == request_id, a.attempt == attempt, a.ended_at.is_(None))
                .values(outcome=outcome, ended_at=db_now())
            )
            current = conn.execute(
                sa.select(r.status, r.attempts, r.answered_by, r.end_reason)
                .where(r.id == request_id)
                .with_for_update()
            ).one()
            if ended.rowcount == 0 or current.attempts != attempt:
                return str(current.status)
            if outcome in RETRYABLE_OUTCOMES and attempt < max_attempts:
                status = "queued"
                values: dict[str, object] = {"not_before": db_now(retry_delay)}
            else:
                # "completed" is Twilio's word for a call that was answered and has ended.
                status = "completed" if outcome == "completed" else "failed"
                values = {
                    # What the AMD verdict already said wins over the caller's guess.
                    "end_reason": current.end_reason or end_reason or outcome,
                    "answered_by": current.answered_by or answered_by,
                }
            conn.execute(
                sa.update(outbound_requests)
                .where(r.id == request_id)
                .values(status=status, claimed_by=None, updated_at=db_now(), **values)
            )
        return status

    def attempt_answered_sync(
        self,
        request_id: int,
        attempt: int,
        *,
        answered_by: str | None = None,
        end_reason: str | None = None,
        call_sid: str | None = None,
    ) -> bool:
        """The callee answered (or the AMD verdict came): the request is ``in_progress``.

        ``answered_by`` (Twilio's ``AnsweredBy``) and ``end_reason`` (e.g. ``voicemail``) are
        kept when given; ``call_sid`` links the request to that call's row (``calls.id``).
        False if the attempt is not the request's current one or has ended.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        r = outbound_requests.c
        values: dict[str, object] = {"status": "in_progress", "updated_at": db_now()}
        if answered_by is not None:
            values["answered_by"] = answered_by
        if end_reason is not None:
            values["end_reason"] = end_reason
        if call_sid is not None:
            values["call_id"] = (
                sa.select(calls.c.id).where(calls.c.call_sid == call_sid).scalar_subquery()
            )
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(outbound_requests)
                .where(
                    r.id == request_id,
                    r.attempts == attempt,
                    r.status.in_(ACTIVE_STATUSES),
                )
                .values(**values)
            )
        return result.rowcount == 1

    async def attempt_answered(
        self,
        request_id: int,
        attempt: int,
        *,
        answered_by: str | None = None,
        end_reason: str | None = None,
        call_sid: str | None = None,
    ) -> bool:
        """As ``attempt_answered_sync``, in a worker thread.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the update finishes in its thread.
        """
        return await self._run(
            "outbound_answered",
            lambda: self.attempt_answered_sync(
                request_id,
                attempt,
                answered_by=answered_by,
                end_reason=end_reason,
                call_sid=call_sid,
            ),
        )

    async def abandon_lost(self, lease_seconds: float) -> list[int]:
        """As ``abandon_lost_sync``, in a worker thread.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the transaction finishes in its thread.
        """
        return await self._run("outbound_abandon_lost", self.abandon_lost_sync, lease_seconds)

    def abandon_lost_sync(self, lease_seconds: float) -> list[int]:
        """End attempts whose instance died before Twilio's CallSid was recorded; their ids.

        Their requests fail (``end_reason=instance_lost``): whether Twilio placed the call is
        unknown, and ringing a customer twice about one payment is the worse mistake.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        r = outbound_requests.c
        alive = sa.exists().where(
            instances.c.id == r.claimed_by, instances.c.renewed_at > db_now(-lease_seconds)
        )
        with self.engine.begin() as conn:
            lost = conn.execute(
                sa.update(outbound_requests)
                .where(r.status == "dialing", r.claimed_by.is_not(None), ~alive)
                .values(status="failed", end_reason="instance_lost", updated_at=db_now())
                .returning(r.id, r.attempts)
            ).all()
            for row in lost:
                conn.execute(
                    sa.update(outbound_attempts)
                    .where(
                        outbound_attempts.c.request_id == row.id,
                        outbound_attempts.c.attempt == row.attempts,
                        outbound_attempts.c.ended_at.is_(None),
                    )
                    .values(outcome="instance_lost", ended_at=db_now())
                )
        return [row.id for row in lost]
