"""Every ``CallLimits`` deadline, set short, over loopback against the real server (SQLite).

Tested here: ``twilio_start_timeout``, ``max_call_seconds``, ``flush_timeout`` and
``stream_token_ttl``. The other limits are tested where they are cheapest to provoke, listed in
``COVERED_ELSEWHERE`` (``test_every_limit_has_a_test`` checks the list is whole and still
points at real tests); their settings and defaults are checked in
tests/app/test_limits_settings.py.
"""

from __future__ import annotations

import importlib

import attrs
import pytest
import structlog
import trio

from archer import server
from archer.call.records import CallRecord
from archer.cartesia import managed
from archer.db.spool import JsonlSpool
from archer.db.spool_lines import record_from_json
from archer.db.store import SqlCallStore
from archer.settings import CallLimits
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.test_call import running_system
from tests.e2e.test_hostile_stream import (
    assert_complete,
    bare_stream,
    closed_by_archer,
    ended,
    http_get,
    listen,
    speech,
)
from tests.helpers import audio

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: Limits whose test lives elsewhere, by the ``module::function`` that provokes them.
COVERED_ELSEWHERE = {
    "agent_ready_timeout": "tests.e2e.test_call::test_agent_never_answers_session_create",
    "tool_timeout": "tests.call.test_session::test_slow_tool_times_out_while_audio_keeps_flowing",
    "agent_ping_interval": "tests.call.test_session::test_unanswered_ping_fails_the_call",
    "twilio_media_timeout": (
        "tests.e2e.test_lost_stream::test_a_stream_that_sends_nothing_ends_as_twilio_lost"
    ),
    "max_message_bytes": (
        "tests.e2e.test_hostile_stream::test_a_twilio_message_over_the_limit_closes_the_stream",
        "tests.e2e.test_hostile_stream::test_an_agent_message_over_the_limit_fails_the_call",
    ),
}
#: Limits tested in this module, by test.
COVERED_HERE = {
    "twilio_start_timeout": "test_twilio_start_timeout",
    "max_call_seconds": "test_max_call_seconds",
    "flush_timeout": "test_flush_timeout",
    "stream_token_ttl": "test_stream_token_ttl",
}


def test_every_limit_has_a_test() -> None:
    """Each ``CallLimits`` field is tested here or by a named test that still exists."""
    assert set(COVERED_HERE) | set(COVERED_ELSEWHERE) == set(attrs.fields_dict(CallLimits))
    assert not set(COVERED_HERE) & set(COVERED_ELSEWHERE)
    for test in COVERED_HERE.values():
        assert callable(globals()[test])
    for targets in COVERED_ELSEWHERE.values():
        for target in (targets,) if isinstance(targets, str) else targets:
            module, function = target.split("::")
            assert callable(getattr(importlib.import_module(module), function)), target


@sqlite_only
async def test_twilio_start_timeout(database_url: str) -> None:
    """A stream that never sends ``start`` is closed at the deadline; no call starts."""
    limits = CallLimits(twilio_start_timeout=0.5)
    with structlog.testing.capture_logs() as logs:
        async with running_system(database_url, listen, limits=limits) as system:
            caller = system.caller
            await caller.dial()
            async with bare_stream(caller) as websocket:
                await websocket.send_message(
                    '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
                )
                opened = trio.current_time()
                await closed_by_archer(websocket)
                waited = trio.current_time() - opened
            stored = await system.store.load_call(caller.call_sid)
            assert await http_get(caller.archer_url, "/healthz") == 200
    assert 0.5 <= waited < STEP_TIMEOUT
    events = [entry["event"] for entry in logs]
    [no_start] = [entry for entry in logs if entry["event"] == "stream.no_start"]
    assert no_start["timeout"] == 0.5
    assert "call.started" not in events
    assert "call.finished" not in events
    assert system.agent.peers == []
    assert stored is not None
    assert (stored.record.status, stored.record.stream_sid, stored.record.end_reason) == (
        "initiated",
        None,
        None,
    )


@sqlite_only
async def test_max_call_seconds(database_url: str) -> None:
    """A call still going at ``max_call_seconds`` is cut as ``max_duration``, record complete."""
    limits = CallLimits(max_call_seconds=1.5, agent_ready_timeout=2.0)
    async with running_system(database_url, listen, limits=limits) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            for tag in range(1, 4):
                await caller.speak(audio(tag))
            await peer.wait_for(lambda events: len(speech(peer)) >= 3)
            stored = await system.wait_for_record(ended)
            with trio.fail_after(STEP_TIMEOUT):
                await caller.closed.wait()
                await peer.closed.wait()
            nursery.cancel_scope.cancel()
    record = stored.record
    assert (record.status, record.end_reason, record.error) == ("completed", "max_duration", None)
    assert record.frames_in == 3
    assert record.duration_ms is not None
    assert 1500 <= record.duration_ms < 1500 + STEP_TIMEOUT * 1000
    assert_complete(stored, caller)


#: How long the slow store's ``save_call`` takes: well past the short flush timeout.
SLOW_SAVE_SECONDS = 3.0


class SlowSaveStore(SqlCallStore):
    """The real store, but the final save of a call takes ``SLOW_SAVE_SECONDS``."""

    async def save_call(self, record: CallRecord) -> None:
        await trio.sleep(SLOW_SAVE_SECONDS)
        await super().save_call(record)


@sqlite_only
async def test_flush_timeout(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save slower than ``flush_timeout`` is given up on: the route returns, the record is
    spooled, ``call.flush_timed_out`` is logged, and the server stays healthy."""
    monkeypatch.setattr(server, "SqlCallStore", SlowSaveStore)
    limits = CallLimits(flush_timeout=0.5, agent_ready_timeout=2.0)

    async def greet(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        await peer.send(
            managed.turn_ended(
                1, "assistant", "Hello.", interrupted=False, start_time=0.1, end_time=0.3
            )
        )

    with structlog.testing.capture_logs() as logs:
        async with running_system(database_url, greet, limits=limits) as system:
            caller = system.caller
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                peer = await system.peer()
                await caller.speak(audio(1))
                await peer.wait_for(lambda events: len(speech(peer)) >= 1)
                await caller.stop()
                stopped = trio.current_time()
                with trio.fail_after(STEP_TIMEOUT):
                    await caller.closed.wait()
                closed_after = trio.current_time() - stopped
                nursery.cancel_scope.cancel()
            assert await http_get(caller.archer_url, "/healthz") == 200
            assert await http_get(caller.archer_url, "/readyz") == 200
            stored = await system.store.load_call(caller.call_sid)
            spooled = JsonlSpool.for_instance(
                system.settings_spool_path, system.settings.instance_id
            )
            lines = await trio.to_thread.run_sync(spooled.path.read_text)
    assert 0.5 <= closed_after < SLOW_SAVE_SECONDS
    [timed_out] = [entry for entry in logs if entry["event"] == "call.flush_timed_out"]
    assert timed_out["timeout"] == 0.5
    assert "call.spooled" in [entry["event"] for entry in logs]
    # The database never took the final write; the spool holds the whole record.
    assert stored is not None
    assert stored.record.end_reason is None
    [line] = lines.splitlines()
    record = record_from_json(line)
    assert (record.call_sid, record.status, record.end_reason) == (
        caller.call_sid,
        "completed",
        "caller_hangup",
    )
    assert [turn.text for turn in record.turns] == ["Hello."]
    assert record.frames_in == 1


@sqlite_only
async def test_stream_token_ttl(database_url: str) -> None:
    """A stream token presented after its TTL is refused: no call starts, nothing is claimed."""
    limits = CallLimits(stream_token_ttl=0.5)
    with structlog.testing.capture_logs() as logs:
        async with running_system(database_url, listen, limits=limits) as system:
            caller = system.caller
            await caller.dial()
            await trio.sleep(1.0)
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                with trio.fail_after(STEP_TIMEOUT):
                    await caller.closed.wait()
                nursery.cancel_scope.cancel()
            stored = await system.store.load_call(caller.call_sid)
    [rejected] = [entry for entry in logs if entry["event"] == "stream.rejected"]
    assert rejected["reason"] == "token unknown, used or expired"
    assert "call.started" not in [entry["event"] for entry in logs]
    assert system.agent.peers == []
    assert stored is not None
    assert (stored.record.status, stored.record.stream_sid) == ("initiated", None)
