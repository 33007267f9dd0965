"""Contract: ``CallStore``, one suite against ``FakeCallStore`` and ``SqlCallStore``.

Layer: contract tests (acceptance 3 of issue 18). The call and the web routes are tested against
``tests.fakes.store.FakeCallStore``; this suite proves the fake answers what
``archer.db.store.SqlCallStore`` answers, on SQLite and on PostgreSQL, through the port alone:
customers found by number, a call armed once, a stream token spent once (and never when wrong,
unknown or expired), writes that are safe twice, and Twilio's terminal status finishing a call
that no live instance carries — but leaving a carried call to its instance.

The real store is this suite's instance ``pod-contract`` with a live lease, as in production
(``SqlInstances.renew``), so "carried by a live instance" means the same on both sides. Token
expiry is the database's clock for the real store; the inputs here are built around the host's
now, far enough either side that both clocks agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import attrs
import pytest
import trio

from archer.call.ports import CallStore
from archer.call.records import CallRecord, ClaimedCall, NewCall, StreamClaim, TwilioStatusUpdate
from archer.db.engine import init_schema
from archer.db.instances import SqlInstances
from archer.db.store import SqlCallStore
from tests.fakes.store import FakeCallStore

CALLER = "+15555550142"
ARCHER_NUMBER = "+15555550100"
TOKEN = "a" * 64
INSTANCE = "pod-contract"


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CallStore]:
    if request.param == "fake":
        yield FakeCallStore()
        return
    url = request.getfixturevalue(f"{request.param}_url")
    sql_store = attrs.evolve(SqlCallStore.open(url, pool_size=2), instance_id=INSTANCE)
    try:
        await trio.to_thread.run_sync(init_schema, sql_store.engine)
        await SqlInstances(sql_store, INSTANCE, started_at=_now() - timedelta(days=1)).renew()
        yield sql_store
    finally:
        await sql_store.aclose()


def _now() -> datetime:
    # Whole milliseconds: both databases keep at least that much of a timestamp.
    return datetime.now(UTC).replace(microsecond=datetime.now(UTC).microsecond // 1000 * 1000)


def new_call(
    call_sid: str, *, caller: str | None = CALLER, expires_in: float = 60, started_at: datetime
) -> NewCall:
    return NewCall(
        call_sid=call_sid,
        from_number=caller or "anonymous",
        to_number=ARCHER_NUMBER,
        caller_e164=caller,
        stream_token_hash=TOKEN,
        stream_token_expires_at=started_at + timedelta(seconds=expires_in),
        started_at=started_at,
    )


def claim(call_sid: str, *, token: str = TOKEN) -> StreamClaim:
    return StreamClaim(
        call_sid=call_sid, stream_sid="MZ" + call_sid, stream_token_hash=token, now=_now()
    )


async def test_one_caller_is_one_customer_and_a_withheld_number_is_none(store: CallStore) -> None:
    now = _now()
    first = await store.open_call(new_call("CA0001", started_at=now))
    again = await store.open_call(new_call("CA0002", started_at=now))
    other = await store.open_call(new_call("CA0003", caller="+15555550199", started_at=now))
    withheld = await store.open_call(new_call("CA0004", caller=None, started_at=now))
    assert first.customer_id is not None
    assert again.customer_id == first.customer_id
    assert other.customer_id not in (None, first.customer_id)
    assert withheld.customer_id is None
    assert (first.call_sid, first.armed) == ("CA0001", True)


async def test_a_call_is_armed_once(store: CallStore) -> None:
    now = _now()
    assert (await store.open_call(new_call("CA0001", started_at=now))).armed
    assert not (await store.open_call(new_call("CA0001", started_at=now))).armed
    assert await store.claim_stream(claim("CA0001")) is not None
    assert not (await store.open_call(new_call("CA0001", started_at=now))).armed


async def test_a_stream_token_is_spent_once(store: CallStore) -> None:
    now = _now()
    opened = await store.open_call(new_call("CA0001", started_at=now))
    claimed = await store.claim_stream(claim("CA0001"))
    assert claimed == ClaimedCall(
        call_sid="CA0001",
        customer_id=opened.customer_id,
        from_number=CALLER,
        to_number=ARCHER_NUMBER,
        started_at=now,
    )
    assert await store.claim_stream(claim("CA0001")) is None


async def test_a_wrong_unknown_or_expired_token_claims_nothing(store: CallStore) -> None:
    now = _now()
    await store.open_call(new_call("CA0001", started_at=now))
    await store.open_call(new_call("CA0002", started_at=now, expires_in=-300))
    assert await store.claim_stream(claim("CA0001", token="b" * 64)) is None
    assert await store.claim_stream(claim("CA9999")) is None
    assert await store.claim_stream(claim("CA0002")) is None
    # A wrong token spent nothing: the right one still works.
    assert await store.claim_stream(claim("CA0001")) is not None


async def test_a_tokens_lifetime_runs_on_the_stores_clock_not_the_webhooks(
    store: CallStore,
) -> None:
    """A webhook host an hour behind still hands out a 60-second token that works."""
    await store.open_call(new_call("CA0001", started_at=_now() - timedelta(hours=1), expires_in=60))
    assert await store.claim_stream(claim("CA0001")) is not None


async def test_writes_are_safe_twice(store: CallStore) -> None:
    now = _now()
    await store.open_call(new_call("CA0001", started_at=now))
    assert await store.claim_stream(claim("CA0001")) is not None
    record = CallRecord(
        call_sid="CA0001",
        status="completed",
        started_at=now,
        stream_sid="MZCA0001",
        from_number=CALLER,
        to_number=ARCHER_NUMBER,
        end_reason="caller_hangup",
        connected_at=now,
        ended_at=now + timedelta(seconds=30),
        duration_ms=30_000,
    )
    await store.save_call(record)
    await store.save_call(record)
    update = TwilioStatusUpdate(call_sid="CA0001", twilio_status="completed", twilio_duration_s=31)
    # The call was finished by its own flush: the status finishes nothing, however often.
    assert await store.record_twilio_status(update) is None
    assert await store.record_twilio_status(update) is None
    await store.check()


async def test_a_terminal_status_finishes_a_call_no_stream_carries(store: CallStore) -> None:
    now = _now()
    await store.open_call(new_call("CA0001", started_at=now))
    ringing = TwilioStatusUpdate(call_sid="CA0001", twilio_status="ringing", twilio_duration_s=None)
    assert await store.record_twilio_status(ringing) is None
    over = TwilioStatusUpdate(call_sid="CA0001", twilio_status="no-answer", twilio_duration_s=0)
    assert await store.record_twilio_status(over) == "twilio_ended"
    assert await store.record_twilio_status(over) is None  # a finished call is never touched
    # Its token went with it: a stream that arrives now carries nothing.
    assert await store.claim_stream(claim("CA0001")) is None


async def test_a_status_before_the_webhook_keeps_the_call_from_being_armed(
    store: CallStore,
) -> None:
    over = TwilioStatusUpdate(call_sid="CA0001", twilio_status="canceled", twilio_duration_s=None)
    assert await store.record_twilio_status(over) == "twilio_ended"
    assert not (await store.open_call(new_call("CA0001", started_at=_now()))).armed


async def test_a_terminal_status_leaves_a_carried_call_to_its_instance(store: CallStore) -> None:
    await store.open_call(new_call("CA0001", started_at=_now()))
    assert await store.claim_stream(claim("CA0001")) is not None
    over = TwilioStatusUpdate(call_sid="CA0001", twilio_status="completed", twilio_duration_s=12)
    assert await store.record_twilio_status(over) is None
