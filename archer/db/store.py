"""The ``CallStore`` port on SQLAlchemy Core: PostgreSQL in production, SQLite by default.

Layer: database adapter. The async methods are the trio side; each hands exactly one short unit
of work (one connection, one transaction) to a worker thread and waits for it.

Rules:

- Only frozen records (``archer.call.records``) cross into a thread, and only plain values come
  back; the thread functions touch nothing a trio task could be mutating.
- Threads are never abandoned on cancellation (``save_call`` excepted, see there): a write the
  caller gave up on could still commit after Archer decided it failed. Cancellation takes
  effect when the thread returns, and the driver timeouts (``archer.db.engine``) bound how long
  that can be.
- A ``trio.CapacityLimiter`` the size of the connection pool gates the threads, so DB work
  queues on the trio side instead of in pool checkout, and never starves trio's default pool.
- Every SQLAlchemy error (and ``OSError``) becomes ``StoreError`` here; nothing above sees one.
- Every write is an idempotent upsert keyed by ``CallSid``: a retried webhook, a replayed flush
  or a repeated status callback leaves the same rows. Finished stays finished: a write of a call
  still in progress never reopens a finished row (it only adds turns and tool calls it lacks);
  a final record replaces a reaper's or the status callback's guess (``archer.db.instances``).
- Expiry is judged by the database's clock (``archer.db.clock``), never a host's.
- Success lines are logged at debug from inside the thread, so the caller's bound contextvars
  (``call_sid``) appear on them; failures are logged once, at warning, on the trio side.

Size (over 400 lines, on purpose): one class implements one port, and the rules above (the
trio/thread boundary, error mapping, finished-stays-finished) hold for every statement of it;
the call row's writers (open, claim, save, Twilio's status) update the same columns under the
same conditions and are read together. What is not the port already lives beside it: leases
and the reaper in ``archer.db.instances``, the clock in ``archer.db.clock``, the bank's queries
in ``archer.db.bank``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, TypeVarTuple, cast

import attrs
import sqlalchemy as sa
import structlog
import trio
from sqlalchemy.dialects import postgresql, sqlite

from archer.call.records import (
    OPEN_STATUSES,
    RECORDING_FINAL_STATUSES,
    TWILIO_TERMINAL_STATUSES,
    CallRecord,
    CallStatus,
    ClaimedCall,
    NewCall,
    OpenedCall,
    RecordingEventRecord,
    RecordingStatusUpdate,
    StreamClaim,
    ToolCallRecord,
    TurnRecord,
    TwilioStatusUpdate,
)
from archer.db.clock import db_now
from archer.db.engine import make_engine, pool_capacity
from archer.db.leases import carrier_alive, carrier_lease
from archer.db.tables import (
    CALL_STATUSES,
    call_recordings,
    call_turns,
    calls,
    customers,
    recording_events,
    tool_calls,
)
from archer.db.threads import DbObserver, describe_error, run_in_thread
from archer.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from archer.call.ports import CallStore

__all__ = ["SqlCallStore", "StoredCall"]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: Twilio call statuses of a call not over yet (anything else is final: never armed again).
_CALL_UNDER_WAY: Final = ("queued", "initiated", "ringing", "in-progress")


@attrs.frozen(slots=True)
class StoredCall:
    """A call as the database holds it: the record plus what only Twilio's callback writes."""

    record: CallRecord
    twilio_status: str | None
    twilio_duration_s: int | None


@attrs.frozen(slots=True)
class SqlCallStore:
    """``CallStore`` backed by a SQLAlchemy engine, one worker thread per unit of work.

    Build it with ``SqlCallStore.open(url, pool_size)`` or ``SqlCallStore.from_engine(engine)``,
    and ``await store.aclose()`` at shutdown.
    """

    _engine: sa.Engine
    #: Tokens == connections the pool can hand out (pool_size + max_overflow).
    _limiter: trio.CapacityLimiter
    #: Told ``(operation, seconds, error=...)`` after every unit of work (for the metrics).
    observe: DbObserver | None = attrs.field(default=None, kw_only=True)
    #: This process's ``INSTANCE_ID``: a stream it claims names it in ``calls.instance_id``.
    instance_id: str | None = attrs.field(default=None, kw_only=True)
    #: ``INSTANCE_LEASE_SECONDS``: whether the instance carrying a call is alive (status callback).
    lease_seconds: float = attrs.field(default=15.0, kw_only=True)

    @classmethod
    def open(cls, url: str, pool_size: int) -> Self:
        """A store on a new engine for ``url`` (does not connect).

        Raises:
            ConfigError: the URL is malformed or unsupported.
        """
        return cls.from_engine(make_engine(url, pool_size=pool_size))

    @classmethod
    def from_engine(cls, engine: sa.Engine) -> Self:
        """A store on an existing engine, with a limiter sized to its pool."""
        return cls(engine, trio.CapacityLimiter(pool_capacity(engine)))

    @property
    def engine(self) -> sa.Engine:
        """The engine, for sync callers in their own thread (schema set-up, seeding)."""
        return self._engine

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The limiter gating this store's threads, for another store sharing the engine."""
        return self._limiter

    # --- CallStore ------------------------------------------------------------------------

    async def open_call(self, call: NewCall) -> OpenedCall:
        """Find or create the caller's customer and insert the call row, armed with its token.

        A call is armed once (``OpenedCall.armed`` is False for a CallSid seen before).

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("open_call", self._open_call_sync, call)

    async def claim_stream(self, claim: StreamClaim) -> ClaimedCall | None:
        """Spend a one-time stream token; None if it is unknown, expired or already spent.

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("claim_stream", self._claim_stream_sync, claim)

    async def save_call(self, record: CallRecord) -> None:
        """Upsert the call row by ``call_sid`` with its turns and tool calls.

        A record still in progress never reopens a finished row, nor changes the turns and tool
        calls it holds (it adds the missing ones); a final record always lands.

        Raises:
            StoreError: the database is unavailable.
        """
        # The one write abandoned when the flush deadline passes: it is an idempotent upsert
        # and the caller spools the record, so a late commit is harmless.
        await self._run("save_call", self._save_call_sync, record, abandon_on_cancel=True)

    async def record_twilio_status(self, update: TwilioStatusUpdate) -> str | None:
        """Store Twilio's final status and duration; safe twice, late, or before the stream ends.

        A terminal status for a call no live instance carries also finishes the call (see
        ``_finish_orphan``); the end reason it was given is returned (None: not finished here).

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("record_twilio_status", self._record_twilio_status_sync, update)

    async def record_recording_status(self, update: RecordingStatusUpdate) -> bool:
        """Store what Twilio reported about a call's recording (issue 21); safe twice and in any
        order: a final status (``completed``, ``absent``, ``failed``) is never overwritten, and
        a callback without a field never erases it. False if no call has the CallSid.

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("record_recording", self._record_recording_status_sync, update)

    async def check(self) -> None:
        """Round-trip to the database (readiness).

        Raises:
            StoreError: the database is unavailable.
        """
        await self._run("check", self._check_sync)

    # --- beyond the port: ops, tests and the demo -------------------------------------------

    async def load_call(self, call_sid: str) -> StoredCall | None:
        """The stored call with its turns (by turn) and tool calls (by start); None if unknown.

        Raises:
            StoreError: the database is unavailable.
        """
        return await self._run("load_call", self._load_call_sync, call_sid)

    async def aclose(self) -> None:
        """Close every pooled connection (blocks on the network, so in a thread)."""
        await trio.to_thread.run_sync(self._engine.dispose)

    # --- the trio/thread boundary ---------------------------------------------------------

    async def _run(
        self,
        operation: str,
        fn: Callable[[*_Ts], _T],
        *args: *_Ts,
        abandon_on_cancel: bool = False,
    ) -> _T:
        return await run_in_thread(
            operation,
            fn,
            *args,
            limiter=self._limiter,
            observe=self.observe,
            abandon_on_cancel=abandon_on_cancel,
        )

    # --- units of work (each runs in a worker thread) ------------------------------------

    def _open_call_sync(self, call: NewCall) -> OpenedCall:
        with self._engine.begin() as conn:
            customer_id, created = (
                _find_or_create_customer(conn, call.caller_e164)
                if call.caller_e164 is not None
                else (None, False)
            )
            insert = _insert(conn, calls).values(
                call_sid=call.call_sid,
                status="initiated",
                from_number=call.from_number,
                to_number=call.to_number,
                customer_id=customer_id,
                started_at=call.started_at,
                stream_token_hash=call.stream_token_hash,
                # The database's clock decides expiry (the claim compares with it too); the
                # webhook's two host-clock times only say how long the token lives.
                stream_token_expires_at=db_now(
                    (call.stream_token_expires_at - call.started_at).total_seconds()
                ),
            )
            new = insert.excluded
            upsert = insert.on_conflict_do_update(
                index_elements=[calls.c.call_sid],
                set_={
                    "stream_token_hash": new.stream_token_hash,
                    "stream_token_expires_at": new.stream_token_expires_at,
                    # Fill what a status callback that beat the webhook could not know.
                    "from_number": sa.func.coalesce(calls.c.from_number, new.from_number),
                    "to_number": sa.func.coalesce(calls.c.to_number, new.to_number),
                    "customer_id": sa.func.coalesce(calls.c.customer_id, new.customer_id),
                },
                # A call is armed once (issue 19). A repeated webhook (a replay of a captured,
                # signed request) never gets a second usable token, whether the first is still
                # live, spent by a stream or expired; and a call that ended (Twilio's final
                # status arrived first) is never armed at all. Only a row the status callback
                # opened for a call still under way is armed here.
                where=sa.and_(
                    calls.c.stream_token_expires_at.is_(None),
                    calls.c.stream_sid.is_(None),
                    calls.c.ended_at.is_(None),
                    sa.or_(
                        calls.c.twilio_status.is_(None),
                        calls.c.twilio_status.in_(_CALL_UNDER_WAY),
                    ),
                ),
            ).returning(calls.c.id)
            armed = conn.execute(upsert).first() is not None
        log.debug(
            "db.call_opened",
            customer_id=customer_id,
            customer_created=created,
            token_armed=armed,
        )
        return OpenedCall(call_sid=call.call_sid, customer_id=customer_id, armed=armed)

    def _claim_stream_sync(self, claim: StreamClaim) -> ClaimedCall | None:
        # One statement, so two streams racing for the same token cannot both win.
        stmt = (
            sa.update(calls)
            .where(
                calls.c.call_sid == claim.call_sid,
                calls.c.stream_token_hash == claim.stream_token_hash,
                calls.c.stream_token_expires_at > db_now(),
                calls.c.stream_sid.is_(None),
            )
            .values(
                stream_sid=claim.stream_sid,
                instance_id=self.instance_id,
                connected_at=claim.now,
                status="in_progress",
                stream_token_hash=None,
            )
            .returning(
                calls.c.call_sid,
                calls.c.customer_id,
                calls.c.from_number,
                calls.c.to_number,
                calls.c.started_at,
            )
        )
        with self._engine.begin() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            log.debug("db.stream_claim_refused")
            return None
        log.debug("db.stream_claimed", customer_id=row.customer_id)
        return ClaimedCall(
            call_sid=row.call_sid,
            customer_id=row.customer_id,
            from_number=row.from_number,
            to_number=row.to_number,
            started_at=row.started_at,
        )

    def _save_call_sync(self, record: CallRecord) -> None:
        row = _call_row(record)
        with self._engine.begin() as conn:
            insert = _insert(conn, calls).values(row)
            upsert = insert.on_conflict_do_update(
                index_elements=[calls.c.call_sid],
                # Every column the record carries, and nothing else: twilio_* belong to the
                # status callback and the token columns to the webhook and the claim.
                set_={name: insert.excluded[name] for name in row if name != "call_sid"},
                # Finished stays finished against a write of a call still in progress (a late
                # incremental write, an instance back from the dead); a final record replaces a
                # reaper's or the status callback's guess, as it knows how the call ended.
                where=sa.or_(
                    calls.c.status.in_(OPEN_STATUSES),
                    insert.excluded.status.not_in(OPEN_STATUSES),
                ),
            ).returning(calls.c.id)
            updated: int | None = conn.execute(upsert).scalar_one_or_none()
            # The row was left alone, but its turns and tool calls are still added.
            call_id: int = (
                updated
                if updated is not None
                else conn.execute(
                    sa.select(calls.c.id).where(calls.c.call_sid == record.call_sid)
                ).scalar_one()
            )
            # A write of a call in progress that reached a finished row (it landed after the
            # final flush, or the call was reaped) only adds what is missing.
            only_add = updated is None and record.status in OPEN_STATUSES
            if record.turns:
                turn_stmt = _insert(conn, call_turns)
                turn_keys = [call_turns.c.call_id, call_turns.c.turn]
                conn.execute(
                    turn_stmt.on_conflict_do_nothing(index_elements=turn_keys)
                    if only_add
                    else turn_stmt.on_conflict_do_update(
                        index_elements=turn_keys,
                        set_={name: turn_stmt.excluded[name] for name in _TURN_UPDATES},
                    ),
                    [_turn_row(call_id, turn) for turn in record.turns],
                )
            if record.tool_calls:
                tool_stmt = _insert(conn, tool_calls)
                tool_keys = [tool_calls.c.call_id, tool_calls.c.tool_call_id]
                conn.execute(
                    tool_stmt.on_conflict_do_nothing(index_elements=tool_keys)
                    if only_add
                    else tool_stmt.on_conflict_do_update(
                        index_elements=tool_keys,
                        set_={name: tool_stmt.excluded[name] for name in _TOOL_CALL_UPDATES},
                    ),
                    [_tool_call_row(call_id, tool) for tool in record.tool_calls],
                )
            if record.recording_events:
                # Keyed by (call, seq); an event never changes once recorded, so a repeat (a
                # replay, the flush after the recorder) leaves the row as it was.
                conn.execute(
                    _insert(conn, recording_events).on_conflict_do_nothing(
                        index_elements=[recording_events.c.call_id, recording_events.c.seq]
                    ),
                    [_recording_event_row(call_id, event) for event in record.recording_events],
                )
        log.debug(
            "db.call_saved",
            status=record.status,
            end_reason=record.end_reason,
            turns=len(record.turns),
            tool_calls=len(record.tool_calls),
            recording_events=len(record.recording_events),
        )

    def _record_recording_status_sync(self, update: RecordingStatusUpdate) -> bool:
        with self._engine.begin() as conn:
            call_id = conn.execute(
                sa.select(calls.c.id).where(calls.c.call_sid == update.call_sid)
            ).scalar_one_or_none()
            if call_id is None:
                return False
            insert = _insert(conn, call_recordings).values(
                call_id=call_id,
                recording_sid=update.recording_sid,
                status=update.status,
                channels=update.channels,
                duration_s=update.duration_s,
                url=update.url,
                error_code=update.error_code,
                updated_at=db_now(),
            )
            new = insert.excluded
            final = call_recordings.c.status.in_(sorted(RECORDING_FINAL_STATUSES))
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[call_recordings.c.recording_sid],
                    set_={
                        "status": sa.case((final, call_recordings.c.status), else_=new.status),
                        "channels": sa.func.coalesce(new.channels, call_recordings.c.channels),
                        "duration_s": sa.func.coalesce(
                            new.duration_s, call_recordings.c.duration_s
                        ),
                        "url": sa.func.coalesce(new.url, call_recordings.c.url),
                        "error_code": sa.func.coalesce(
                            new.error_code, call_recordings.c.error_code
                        ),
                        "updated_at": new.updated_at,
                    },
                )
            )
        log.debug("db.recording_status", status=update.status)
        return True

    def _record_twilio_status_sync(self, update: TwilioStatusUpdate) -> str | None:
        with self._engine.begin() as conn:
            insert = _insert(conn, calls).values(
                call_sid=update.call_sid,
                # No row yet (the callback beat the webhook, or the webhook's write failed):
                # keep what Twilio said in a minimal row rather than lose it.
                status="initiated",
                started_at=db_now(),
                twilio_status=update.twilio_status,
                twilio_duration_s=update.twilio_duration_s,
            )
            new = insert.excluded
            upsert = insert.on_conflict_do_update(
                index_elements=[calls.c.call_sid],
                set_={
                    "twilio_status": new.twilio_status,
                    # A callback without a duration never erases one we already have.
                    "twilio_duration_s": sa.func.coalesce(
                        new.twilio_duration_s, calls.c.twilio_duration_s
                    ),
                },
            )
            conn.execute(upsert)
            finished = (
                conn.execute(self._finish_orphan(update)).scalar_one_or_none()
                if update.twilio_status in TWILIO_TERMINAL_STATUSES
                else None
            )
        log.debug(
            "db.twilio_status_saved",
            twilio_status=update.twilio_status,
            twilio_duration_s=update.twilio_duration_s,
            finished=finished,
        )
        return finished

    def _finish_orphan(self, update: TwilioStatusUpdate) -> sa.Update:
        """The call is over for Twilio: finish the row now if no live instance carries it.

        A call a live instance carries is left to that instance's own flush (which knows more);
        a finished row is never touched. The end reason says who is missing: the instance that
        carried the stream (``instance_lost``, ended at its lease's last renewal, as the reaper
        would) or any stream at all (``twilio_ended``).
        """
        never_carried = calls.c.instance_id.is_(None)
        return (
            sa.update(calls)
            .where(
                calls.c.call_sid == update.call_sid,
                calls.c.status.in_(OPEN_STATUSES),
                ~carrier_alive(self.lease_seconds),
            )
            .values(
                status="completed" if update.twilio_status == "completed" else "failed",
                end_reason=sa.case((never_carried, "twilio_ended"), else_="instance_lost"),
                ended_at=sa.case(
                    (never_carried, db_now()), else_=sa.func.coalesce(carrier_lease(), db_now())
                ),
                stream_token_hash=None,
            )
            .returning(calls.c.end_reason)
        )

    def _check_sync(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1))).scalar_one()

    def _load_call_sync(self, call_sid: str) -> StoredCall | None:
        with self._engine.begin() as conn:
            call_row = conn.execute(sa.select(calls).where(calls.c.call_sid == call_sid)).first()
            if call_row is None:
                return None
            turn_rows = conn.execute(
                sa.select(call_turns)
                .where(call_turns.c.call_id == call_row.id)
                .order_by(call_turns.c.turn)
            ).all()
            tool_rows = conn.execute(
                sa.select(tool_calls)
                .where(tool_calls.c.call_id == call_row.id)
                .order_by(tool_calls.c.started_at, tool_calls.c.id)
            ).all()
            recording_rows = conn.execute(
                sa.select(recording_events)
                .where(recording_events.c.call_id == call_row.id)
                .order_by(recording_events.c.seq)
            ).all()
        log.debug("db.call_loaded", turns=len(turn_rows), tool_calls=len(tool_rows))
        return StoredCall(
            record=_record_from_rows(call_row, turn_rows, tool_rows, recording_rows),
            twilio_status=call_row.twilio_status,
            twilio_duration_s=call_row.twilio_duration_s,
        )


if TYPE_CHECKING:

    def _implements_the_port(store: SqlCallStore) -> CallStore:
        # mypy proves here that SqlCallStore satisfies the CallStore protocol.
        return store


# --- rows <-> records (pure) ----------------------------------------------------------------

_TURN_UPDATES = ("role", "text", "interrupted", "start_time", "end_time", "heard_ms")
_TOOL_CALL_UPDATES = (
    "name",
    "arguments",
    "result",
    "is_error",
    "started_at",
    "finished_at",
    "outcome",
)


def _insert(conn: sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with ON CONFLICT support in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _find_or_create_customer(conn: sa.Connection, phone_e164: str) -> tuple[int, bool]:
    """The customer calling from ``phone_e164`` (created, no name or PIN, if new) and whether
    this call created it."""
    find = sa.select(customers.c.id).where(customers.c.phone_e164 == phone_e164)
    existing: int | None = conn.execute(find).scalar_one_or_none()
    if existing is not None:
        return existing, False
    # Two first calls from one number can race here: DO NOTHING lets the loser fall through to
    # the select, which (read committed) sees the winner's row once its insert committed.
    create = (
        _insert(conn, customers)
        .values(phone_e164=phone_e164)
        .on_conflict_do_nothing(index_elements=[customers.c.phone_e164])
        .returning(customers.c.id)
    )
    created: int | None = conn.execute(create).scalar_one_or_none()
    if created is not None:
        return created, True
    return conn.execute(find).scalar_one(), False


def _call_row(record: CallRecord) -> dict[str, object]:
    """The ``calls`` columns a ``CallRecord`` carries (not twilio_*, not the token)."""
    return {
        "call_sid": record.call_sid,
        "stream_sid": record.stream_sid,
        "customer_id": record.customer_id,
        "from_number": record.from_number,
        "to_number": record.to_number,
        "status": record.status,
        "end_reason": record.end_reason,
        "agent_call_id": record.agent_call_id,
        "started_at": record.started_at,
        "connected_at": record.connected_at,
        "ended_at": record.ended_at,
        "duration_ms": record.duration_ms,
        "frames_in": record.frames_in,
        "frames_out": record.frames_out,
        "frames_dropped": record.frames_dropped,
        "error": record.error,
        # Read-only Mappings in the record; the JSON serialiser wants plain dicts.
        "agent_events": [dict(event) for event in record.agent_events],
        "agent_reconnects": record.agent_reconnects,
        "agent_call_ids": list(record.agent_call_ids),
        "frames_silenced_for_pin": record.frames_silenced_for_pin,
        "frames_silenced_for_tones": record.frames_silenced_for_tones,
        "dtmf_dropped": record.dtmf_dropped,
    }


def _turn_row(call_id: int, turn: TurnRecord) -> dict[str, object]:
    return {
        "call_id": call_id,
        "turn": turn.turn,
        "role": turn.role,
        "text": turn.text,
        "interrupted": turn.interrupted,
        "start_time": turn.start_time,
        "end_time": turn.end_time,
        "heard_ms": turn.heard_ms,
    }


def _tool_call_row(call_id: int, tool: ToolCallRecord) -> dict[str, object]:
    return {
        "call_id": call_id,
        "tool_call_id": tool.tool_call_id,
        "name": tool.name,
        # The record holds a read-only Mapping; the JSON serialiser wants a dict.
        "arguments": dict(tool.arguments),
        "result": tool.result,
        "is_error": tool.is_error,
        "started_at": tool.started_at,
        "finished_at": tool.finished_at,
        "outcome": tool.outcome,
    }


def _recording_event_row(call_id: int, event: RecordingEventRecord) -> dict[str, object]:
    return {"call_id": call_id, **attrs.asdict(event)}


def _record_from_rows(
    call: sa.Row[Any],
    turns: Sequence[sa.Row[Any]],
    tools: Sequence[sa.Row[Any]],
    recordings: Sequence[sa.Row[Any]] = (),
) -> CallRecord:
    return CallRecord(
        call_sid=call.call_sid,
        status=_call_status(call.status),
        started_at=call.started_at,
        stream_sid=call.stream_sid,
        customer_id=call.customer_id,
        from_number=call.from_number,
        to_number=call.to_number,
        end_reason=call.end_reason,
        agent_call_id=call.agent_call_id,
        connected_at=call.connected_at,
        ended_at=call.ended_at,
        duration_ms=call.duration_ms,
        frames_in=call.frames_in,
        frames_out=call.frames_out,
        frames_dropped=call.frames_dropped,
        agent_events=tuple(dict(event) for event in call.agent_events),
        agent_reconnects=call.agent_reconnects,
        agent_call_ids=tuple(call.agent_call_ids),
        frames_silenced_for_pin=call.frames_silenced_for_pin,
        frames_silenced_for_tones=call.frames_silenced_for_tones,
        dtmf_dropped=call.dtmf_dropped,
        error=call.error,
        turns=tuple(
            TurnRecord(
                turn=row.turn,
                role=row.role,
                text=row.text,
                interrupted=row.interrupted,
                start_time=row.start_time,
                end_time=row.end_time,
                heard_ms=row.heard_ms,
            )
            for row in turns
        ),
        tool_calls=tuple(
            ToolCallRecord(
                tool_call_id=row.tool_call_id,
                name=row.name,
                arguments=row.arguments,
                started_at=row.started_at,
                result=row.result,
                is_error=row.is_error,
                finished_at=row.finished_at,
                outcome=row.outcome,
            )
            for row in tools
        ),
        recording_events=tuple(
            RecordingEventRecord(
                seq=row.seq,
                action="pause" if row.action == "pause" else "resume",
                requested_at=row.requested_at,
                answered_at=row.answered_at,
                accepted=row.accepted,
                error_code=row.error_code,
                recording_sid=row.recording_sid,
            )
            for row in recordings
        ),
    )


def _call_status(value: str) -> CallStatus:
    # The column's CHECK makes anything else impossible; this narrows the type for mypy.
    if value not in CALL_STATUSES:
        raise StoreError(f"calls.status holds {value!r}, which is not a call status")
    return cast("CallStatus", value)


#: Kept for importers of the old names; the one definition is in ``archer.db.threads``.
_describe = describe_error
