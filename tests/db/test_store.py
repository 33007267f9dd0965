"""SqlCallStore against real databases: every method, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
import structlog
import trio

from archer.call.records import (
    CallRecord,
    ClaimedCall,
    NewCall,
    RecordingStatusUpdate,
    StreamClaim,
    ToolCallRecord,
    TurnRecord,
    TwilioStatusUpdate,
)
from archer.db import tables
from archer.db.spool import JsonlSpool
from archer.db.store import SqlCallStore
from archer.db.tables import call_recordings, customers
from archer.errors import StoreError
from tests.db.test_spool import full_record as spooled_record

T0 = datetime(2025, 5, 1, 14, 0, 0, 250000, tzinfo=UTC)
CALLER = "+15555550142"
ARCHER_NUMBER = "+15555550100"


def new_call(
    call_sid: str = "CA0001",
    *,
    caller: str | None = CALLER,
    token_hash: str = "a" * 64,
    expires_at: datetime = T0 + timedelta(seconds=60),
) -> NewCall:
    return NewCall(
        call_sid=call_sid,
        from_number=caller or "anonymous",
        to_number=ARCHER_NUMBER,
        caller_e164=caller,
        stream_token_hash=token_hash,
        stream_token_expires_at=expires_at,
        started_at=T0,
    )


def claim(
    call_sid: str = "CA0001",
    *,
    token_hash: str = "a" * 64,
    stream_sid: str = "MZ0001",
    now: datetime = T0 + timedelta(seconds=2),
) -> StreamClaim:
    return StreamClaim(
        call_sid=call_sid, stream_sid=stream_sid, stream_token_hash=token_hash, now=now
    )


def finished_record(call_sid: str = "CA0001", *, customer_id: int | None = None) -> CallRecord:
    return CallRecord(
        call_sid=call_sid,
        status="completed",
        started_at=T0,
        stream_sid="MZ0001",
        customer_id=customer_id,
        from_number=CALLER,
        to_number=ARCHER_NUMBER,
        end_reason="caller_hangup",
        agent_call_id="agent-call-1",
        connected_at=T0 + timedelta(seconds=2),
        ended_at=T0 + timedelta(seconds=95),
        duration_ms=93_000,
        frames_in=4650,
        frames_out=3900,
        frames_dropped=3,
        frames_silenced_for_pin=212,
        frames_silenced_for_tones=15,
        dtmf_dropped=2,
        turns=(
            TurnRecord(
                turn=0,
                role="assistant",
                text="Hello, this is Archer Bank.",
                start_time=0.4,
                end_time=2.1,
                heard_ms=1700,
            ),
            TurnRecord(
                turn=1, role="user", text="What's my balance?", start_time=2.8, end_time=4.0
            ),
            TurnRecord(
                turn=2,
                role="assistant",
                text="Your checking balance is",
                interrupted=True,
                start_time=5.2,
                end_time=6.0,
                heard_ms=640,
            ),
        ),
        tool_calls=(
            ToolCallRecord(
                tool_call_id="tool-1",
                name="get_balance",
                arguments={"account": "checking", "last4": "4821"},
                started_at=T0 + timedelta(seconds=4, milliseconds=100),
                result='{"balance_cents": 254310}',
                finished_at=T0 + timedelta(seconds=4, milliseconds=180),
            ),
        ),
    )


async def test_open_call_creates_a_customer_for_a_new_caller(sql_store: SqlCallStore) -> None:
    """A first call from a number creates a customer with no name or PIN and links the call."""
    opened = await sql_store.open_call(new_call())

    assert opened.call_sid == "CA0001"
    assert opened.customer_id is not None
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.status == "initiated"
    assert stored.record.customer_id == opened.customer_id
    assert (stored.record.from_number, stored.record.to_number) == (CALLER, ARCHER_NUMBER)
    assert stored.record.started_at == T0
    row = await trio.to_thread.run_sync(_customer_row, sql_store, CALLER)
    assert row == (opened.customer_id, None, None)


async def test_open_call_finds_the_existing_customer(sql_store: SqlCallStore) -> None:
    """A second call from the same number reuses the customer instead of creating another."""
    first = await sql_store.open_call(new_call("CA0001"))
    second = await sql_store.open_call(new_call("CA0002"))

    assert second.customer_id == first.customer_id
    assert await trio.to_thread.run_sync(_customer_count, sql_store) == 1


async def test_concurrent_first_calls_from_one_number_create_one_customer(
    sql_store: SqlCallStore,
) -> None:
    """Two first calls racing from the same number end up with the same single customer."""
    results: dict[str, int | None] = {}

    async def open_one(call_sid: str) -> None:
        results[call_sid] = (await sql_store.open_call(new_call(call_sid))).customer_id

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for call_sid in ("CA0001", "CA0002", "CA0003"):
                nursery.start_soon(open_one, call_sid)

    assert len(set(results.values())) == 1
    assert None not in results.values()
    assert await trio.to_thread.run_sync(_customer_count, sql_store) == 1


async def test_withheld_caller_id_opens_a_call_without_a_customer(
    sql_store: SqlCallStore,
) -> None:
    """A call with no usable caller number is recorded with no customer and creates none."""
    opened = await sql_store.open_call(new_call(caller=None))

    assert opened.customer_id is None
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.customer_id is None
    assert stored.record.from_number == "anonymous"
    assert await trio.to_thread.run_sync(_customer_count, sql_store) == 0


async def test_claim_stream_spends_the_token_once(sql_store: SqlCallStore) -> None:
    """The first claim wins and moves the call in progress; the same token is then refused."""
    opened = await sql_store.open_call(new_call())

    claimed = await sql_store.claim_stream(claim())
    again = await sql_store.claim_stream(claim(stream_sid="MZ0002"))

    assert claimed == ClaimedCall(
        call_sid="CA0001",
        customer_id=opened.customer_id,
        from_number=CALLER,
        to_number=ARCHER_NUMBER,
        started_at=T0,
    )
    assert again is None
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.status == "in_progress"
    assert stored.record.stream_sid == "MZ0001"
    assert stored.record.connected_at == T0 + timedelta(seconds=2)


@pytest.mark.parametrize(
    "bad_claim",
    [
        pytest.param(claim(token_hash="b" * 64), id="wrong-token"),
        pytest.param(claim(call_sid="CA9999"), id="wrong-call-sid"),
    ],
)
async def test_claim_stream_refuses_bad_claims(
    sql_store: SqlCallStore, bad_claim: StreamClaim
) -> None:
    """A wrong token, a token for another call or an expired token claims nothing."""
    await sql_store.open_call(new_call())

    assert await sql_store.claim_stream(bad_claim) is None
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.status == "initiated"
    assert stored.record.stream_sid is None
    # The refused attempt did not spend the real token.
    assert await sql_store.claim_stream(claim()) is not None


@pytest.mark.parametrize(
    "ttl", [pytest.param(0, id="expired-at-the-instant"), pytest.param(-300, id="expired")]
)
async def test_an_expired_token_claims_nothing(sql_store: SqlCallStore, ttl: int) -> None:
    """Expiry is the token's lifetime on the database's clock: a spent lifetime claims nothing."""
    await sql_store.open_call(new_call(expires_at=T0 + timedelta(seconds=ttl)))

    assert await sql_store.claim_stream(claim()) is None
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.record.status, stored.record.stream_sid) == ("initiated", None)


async def test_token_expiry_ignores_the_hosts_clocks(sql_store: SqlCallStore) -> None:
    """One clock: the webhook host's times only give the lifetime, the claiming host's none.

    The webhook's clock is a year behind and the claiming host's an hour ahead; the database's
    clock says the 60-second token is fresh, so the claim wins.
    """
    year_ago = datetime.now(UTC) - timedelta(days=365)
    await sql_store.open_call(
        attrs.evolve(
            new_call(),
            started_at=year_ago,
            stream_token_expires_at=year_ago + timedelta(seconds=60),
        )
    )

    assert await sql_store.claim_stream(claim(now=datetime.now(UTC) + timedelta(hours=1)))


async def test_a_repeated_webhook_never_arms_a_second_token(sql_store: SqlCallStore) -> None:
    """Issue 19: the first webhook's token is the call's only one; a repeat (a replay) arms
    nothing, before the claim, after it, and after the call ended."""
    first = await sql_store.open_call(new_call(token_hash="a" * 64))
    replayed = await sql_store.open_call(new_call(token_hash="b" * 64))
    assert (first.armed, replayed.armed) == (True, False)
    assert replayed.customer_id == first.customer_id

    assert await sql_store.claim_stream(claim(token_hash="b" * 64)) is None
    assert await sql_store.claim_stream(claim(token_hash="a" * 64)) is not None

    assert not (await sql_store.open_call(new_call(token_hash="c" * 64))).armed
    assert await sql_store.claim_stream(claim(token_hash="c" * 64, stream_sid="MZ0002")) is None
    await sql_store.save_call(finished_record(customer_id=first.customer_id))
    assert not (await sql_store.open_call(new_call(token_hash="d" * 64))).armed
    assert await sql_store.claim_stream(claim(token_hash="d" * 64, stream_sid="MZ0003")) is None
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.stream_sid == "MZ0001"


async def test_a_status_callback_row_is_armed_unless_the_call_is_over(
    sql_store: SqlCallStore,
) -> None:
    """A row the status callback opened first is armed by the webhook while the call is under
    way, never once Twilio reported it over."""
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "ringing", None))
    assert (await sql_store.open_call(new_call("CA0001", token_hash="a" * 64))).armed
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0002", "completed", 3))
    assert not (await sql_store.open_call(new_call("CA0002", token_hash="b" * 64))).armed
    assert await sql_store.claim_stream(claim("CA0002", token_hash="b" * 64)) is None


async def test_save_call_is_idempotent(sql_store: SqlCallStore) -> None:
    """Saving the same record twice stores it once, turns and tool calls included."""
    opened = await sql_store.open_call(new_call())
    record = finished_record(customer_id=opened.customer_id)

    await sql_store.save_call(record)
    await sql_store.save_call(record)

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record == record
    assert await trio.to_thread.run_sync(_row_counts, sql_store) == (1, 3, 1)


async def test_save_call_updates_turns_and_adds_new_ones(sql_store: SqlCallStore) -> None:
    """A later snapshot rewrites a turn's text and adds turns and tool calls it did not have."""
    first = finished_record()
    await sql_store.save_call(first)
    later_tool = ToolCallRecord(
        tool_call_id="tool-2",
        name="freeze_card",
        arguments={"last4": "2207"},
        started_at=T0 + timedelta(seconds=7),
        result="card frozen",
        is_error=False,
        finished_at=T0 + timedelta(seconds=7, milliseconds=300),
    )
    later = attrs.evolve(
        first,
        turns=(
            *first.turns[:2],
            TurnRecord(turn=2, role="assistant", text="Your checking balance is $2,543.10."),
            TurnRecord(turn=3, role="user", text="Thanks, bye."),
        ),
        tool_calls=(*first.tool_calls, later_tool),
    )

    await sql_store.save_call(later)

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record == later
    assert stored.record.turns[2].text == "Your checking balance is $2,543.10."
    assert stored.record.turns[2].interrupted is False
    assert await trio.to_thread.run_sync(_row_counts, sql_store) == (1, 4, 2)


async def test_save_call_inserts_a_call_the_webhook_never_opened(
    sql_store: SqlCallStore,
) -> None:
    """A flush for a call with no row (the webhook's write failed) still stores everything."""
    record = finished_record("CA0404")

    await sql_store.save_call(record)

    stored = await sql_store.load_call("CA0404")
    assert stored is not None
    assert stored.record == record
    assert (stored.twilio_status, stored.twilio_duration_s) == (None, None)


async def test_twilio_status_before_the_flush_survives_it(sql_store: SqlCallStore) -> None:
    """A status callback that lands before the call's flush is not erased by the flush."""
    await sql_store.open_call(new_call())
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", 95))

    await sql_store.save_call(finished_record())

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 95)
    assert stored.record.status == "completed"


async def test_twilio_status_after_the_flush_survives_a_replay(sql_store: SqlCallStore) -> None:
    """A status stored after the flush stays when the flush is replayed from the spool."""
    await sql_store.save_call(finished_record())
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", 95))

    await sql_store.save_call(finished_record())

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 95)


async def test_twilio_status_without_a_call_row_creates_a_minimal_one(
    sql_store: SqlCallStore,
) -> None:
    """A status for an unknown CallSid is kept in a minimal row, and a repeat changes nothing.

    The status is terminal and no stream was ever carried, so the row is finished at once.
    """
    before = datetime.now(UTC)
    update = TwilioStatusUpdate("CA0777", "no-answer", 0)

    assert await sql_store.record_twilio_status(update) == "twilio_ended"
    assert await sql_store.record_twilio_status(update) is None

    stored = await sql_store.load_call("CA0777")
    assert stored is not None
    assert (stored.record.status, stored.record.end_reason) == ("failed", "twilio_ended")
    assert stored.record.ended_at is not None
    assert stored.record.started_at >= before - timedelta(seconds=1)
    assert (stored.twilio_status, stored.twilio_duration_s) == ("no-answer", 0)
    assert await trio.to_thread.run_sync(_row_counts, sql_store) == (1, 0, 0)


async def test_webhook_after_the_status_callback_fills_in_the_call(
    sql_store: SqlCallStore,
) -> None:
    """If the status callback created the row first, the webhook still adds numbers and customer."""
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "ringing", None))

    opened = await sql_store.open_call(new_call())

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.from_number == CALLER
    assert stored.record.customer_id == opened.customer_id is not None
    assert await sql_store.claim_stream(claim()) is not None


async def test_a_status_without_duration_keeps_the_known_duration(
    sql_store: SqlCallStore,
) -> None:
    """A later callback that carries no duration does not erase the one already stored."""
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", 95))
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", None))

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.twilio_duration_s == 95


async def test_load_call_of_an_unknown_call_is_none(sql_store: SqlCallStore) -> None:
    """Loading a CallSid the store never saw answers None."""
    assert await sql_store.load_call("CA-nope") is None


async def test_check_round_trips(sql_store: SqlCallStore) -> None:
    """The readiness check succeeds against a live database."""
    await sql_store.check()


async def test_db_thread_log_lines_carry_the_callers_context(sql_store: SqlCallStore) -> None:
    """Success lines logged inside the worker thread carry contextvars the trio task bound."""
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        structlog.contextvars.bound_contextvars(call_sid="CA0001"),
    ):
        await sql_store.open_call(new_call())
        await sql_store.save_call(finished_record())

    saved = [line for line in logs if line["event"] == "db.call_saved"]
    assert saved == [
        {
            "event": "db.call_saved",
            "log_level": "debug",
            "call_sid": "CA0001",
            "status": "completed",
            "end_reason": "caller_hangup",
            "turns": 3,
            "tool_calls": 1,
            "recording_events": 0,
        }
    ]
    opened = [line for line in logs if line["event"] == "db.call_opened"]
    assert [line["call_sid"] for line in opened] == ["CA0001"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/test", id="postgres-refused"),
        pytest.param("sqlite:////nonexistent-archer-dir/missing/archer.db", id="sqlite-no-dir"),
    ],
)
async def test_unreachable_database_raises_store_error(url: str) -> None:
    """Every method turns a database it cannot reach into StoreError, and logs a warning."""
    store = SqlCallStore.open(url, pool_size=1)
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(StoreError, match=r"^check failed: "):
                await store.check()
            with pytest.raises(StoreError, match=r"^open_call failed: "):
                await store.open_call(new_call())
            with pytest.raises(StoreError):
                await store.claim_stream(claim())
            with pytest.raises(StoreError):
                await store.save_call(finished_record())
            with pytest.raises(StoreError):
                await store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", 1))
            with pytest.raises(StoreError):
                await store.load_call("CA0001")
    finally:
        await store.aclose()

    warnings = [line for line in logs if line["event"] == "db.operation_failed"]
    assert [line["operation"] for line in warnings] == [
        "check",
        "open_call",
        "claim_stream",
        "save_call",
        "record_twilio_status",
        "load_call",
    ]
    assert all(line["log_level"] == "warning" for line in warnings)


async def test_store_error_chains_the_driver_error(sqlite_url: str) -> None:
    """StoreError keeps the SQLAlchemy error as its cause for the traceback in the log."""
    store = SqlCallStore.open(sqlite_url, pool_size=1)
    try:
        # No schema: the table is missing, which the database reports as an error.
        with pytest.raises(StoreError) as caught:
            await store.load_call("CA0001")
    finally:
        await store.aclose()

    assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)
    assert "no such table" in str(caught.value)


# --- helpers (sync: they run in a worker thread, like the store's own work) -------------------


def _customer_row(store: SqlCallStore, phone: str) -> tuple[object, ...]:
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(customers.c.id, customers.c.full_name, customers.c.pin_hash).where(
                customers.c.phone_e164 == phone
            )
        ).one()
    return tuple(row)


def _customer_count(store: SqlCallStore) -> int:
    with store.engine.connect() as conn:
        count: int = conn.execute(sa.select(sa.func.count()).select_from(customers)).scalar_one()
    return count


def _row_counts(store: SqlCallStore) -> tuple[int, int, int]:
    """How many rows calls, call_turns and tool_calls hold."""
    with store.engine.connect() as conn:
        calls, turns, tools = (
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (tables.calls, tables.call_turns, tables.tool_calls)
        )
    return calls, turns, tools


AGENT_EVENTS = (
    {"type": "intent", "intent": "balance", "confidence": 0.93},
    {"type": "note", "tags": ["vip", "callback"], "nested": {"a": 1, "b": None}},
)


async def test_agent_events_round_trip(sql_store: SqlCallStore) -> None:
    """The agent's custom events are stored on the call and load back in order."""
    record = attrs.evolve(finished_record(), agent_events=AGENT_EVENTS)

    await sql_store.save_call(record)

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.agent_events == AGENT_EVENTS
    assert stored.record == record


async def test_agent_events_default_to_none_and_are_replaced_on_resave(
    sql_store: SqlCallStore,
) -> None:
    """A call without events stores an empty list; a re-save replaces the list, never appends."""
    await sql_store.save_call(finished_record())
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.agent_events == ()

    with_events = attrs.evolve(finished_record(), agent_events=AGENT_EVENTS)
    await sql_store.save_call(with_events)
    await sql_store.save_call(with_events)
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.agent_events == AGENT_EVENTS

    fewer = attrs.evolve(finished_record(), agent_events=AGENT_EVENTS[:1])
    await sql_store.save_call(fewer)
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.agent_events == AGENT_EVENTS[:1]


async def test_open_call_row_has_no_agent_events(sql_store: SqlCallStore) -> None:
    """A row the webhook opened (no flush yet) reads back with the column's empty default."""
    await sql_store.open_call(new_call())

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.agent_events == ()


async def test_recording_callbacks_fill_one_row_per_recording(sql_store: SqlCallStore) -> None:
    """Issue 21: in-progress then completed fill one row; a repeat and a late in-progress
    change nothing; a recording of an unknown call is not stored."""
    await sql_store.open_call(new_call())
    rec = "RE" + "1" * 32
    started = RecordingStatusUpdate("CA0001", rec, "in-progress", channels=2)
    done = RecordingStatusUpdate(
        "CA0001", rec, "completed", channels=2, duration_s=41, url="https://api.twilio.com/r"
    )
    for update in (started, done, done, started):
        assert await sql_store.record_recording_status(update) is True
    assert (
        await sql_store.record_recording_status(
            RecordingStatusUpdate("CA9999", "RE" + "2" * 32, "completed")
        )
        is False
    )

    def rows() -> list[tuple[object, ...]]:
        with sql_store.engine.connect() as conn:
            return [
                (
                    row.call_id is not None,
                    row.recording_sid,
                    row.status,
                    row.channels,
                    row.duration_s,
                    row.url,
                    row.error_code,
                )
                for row in conn.execute(sa.select(call_recordings))
            ]

    assert await trio.to_thread.run_sync(rows) == [
        (True, rec, "completed", 2, 41, "https://api.twilio.com/r", None)
    ]


async def test_recording_events_and_outcomes_survive_the_spool(
    sql_store: SqlCallStore, tmp_path: Path
) -> None:
    """Issue 21: a record with recording pauses and a capture's outcome, spooled while the
    database was down, is replayed whole; a second replay and a late in-progress write of the
    same call change nothing (SQLite and PostgreSQL)."""
    record = attrs.evolve(spooled_record("CA0021"), customer_id=None)
    spool = JsonlSpool(tmp_path / "calls.jsonl")
    await spool.append(record)
    await spool.replay(sql_store)
    await sql_store.save_call(record)  # replayed again by another instance
    late = attrs.evolve(
        record,
        status="in_progress",
        end_reason=None,
        recording_events=record.recording_events[:1],
    )
    await sql_store.save_call(late)

    stored = await sql_store.load_call("CA0021")
    assert stored is not None
    assert stored.record == record
    assert [tool.outcome for tool in stored.record.tool_calls] == [None, None, "hang_up"]
    assert [(e.seq, e.action, e.accepted) for e in stored.record.recording_events] == [
        (1, "pause", True),
        (2, "resume", False),
    ]
