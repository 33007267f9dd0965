"""Hostile peers over loopback, against the real server: garbage frames and oversized messages.

A caller that sends raw garbage (non-JSON, binary frames, JSON arrays, unknown events, 100 KB
strings) between good media keeps its call, and every good frame reaches the agent in order.
A message over ``MAX_MESSAGE_BYTES`` from either peer ends the call with a documented
``end_reason``, the record still lands, and the server goes on serving (``/healthz`` and a
second call). SQLite only: the database is not what is under test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import pytest
import structlog
import trio
import trio_websocket
from trio_websocket import CloseReason

from archer.audio.transcoder import Passthrough
from archer.call.pumps import INBOUND_CHECK_MS
from archer.call.records import END_REASONS
from archer.cartesia import managed
from archer.db.store import SqlCallStore, StoredCall
from archer.settings import CallLimits
from archer.websocket_client import open_websocket_client
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer, TwilioCaller
from tests.e2e.test_call import System, running_system
from tests.helpers import audio, eventually, live_archer_tasks

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: What Archer sends the agent while Twilio's audio stalls: not the caller's audio.
GAP_SILENCE = Passthrough().silence_for_agent(INBOUND_CHECK_MS)
#: A small message limit for both sockets (``MAX_MESSAGE_BYTES`` may not go below 4096).
SMALL_LIMIT = 8192
SMALL_LIMITS = CallLimits(max_message_bytes=SMALL_LIMIT, agent_ready_timeout=2.0)


def garbage_frames(caller: TwilioCaller) -> list[str | bytes]:
    """Everything a broken or hostile peer might put on the media socket, none of it usable."""
    sid = caller.stream_sid
    start = {
        "event": "start",
        "start": {
            "streamSid": sid,
            "accountSid": caller.account_sid,
            "callSid": caller.call_sid,
            "tracks": ["inbound"],
            "customParameters": {"token": "replayed"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    return [
        "this is not JSON",
        "",
        b"\x00\x01\x02 a binary frame",
        "[1, 2, 3]",
        '"a bare string"',
        "null",
        json.dumps({"event": "transcription", "streamSid": sid, "text": "hi"}),
        json.dumps({"streamSid": sid, "media": {"payload": audio(1)}}),
        json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "!!not base64!!"}}),
        json.dumps({"event": "media", "media": {"payload": "é" * 50_000}}, ensure_ascii=False),
        json.dumps({"event": "x" * 100_000}),  # an unknown event with a 100 KB name
        json.dumps({"event": "dtmf", "dtmf": {"digit": "A"}}),
        json.dumps({"event": "mark", "mark": {"name": 5}}),
        '{"event": "media", "media": {"payload": "AAAA", "timestamp": NaN, "chunk": "1"}}',
        json.dumps({"event": "media", "media": {"payload": audio(2), "timestamp": "-5"}}),
        "[" * 50_000 + "]" * 50_000,  # 100 KB of nesting: past the JSON decoder's stack
        json.dumps(start),  # a second start, mid-stream
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ]


@asynccontextmanager
async def bare_stream(caller: TwilioCaller) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The media socket, upgraded with Twilio's signature, with nothing sent on it yet."""
    url = caller.archer_url.replace("http", "ws", 1) + "/" + caller.stream_url.split("/", 3)[3]
    signature = caller.signer.sign(caller.stream_url, {})
    async with open_websocket_client(
        url, extra_headers=[(b"X-Twilio-Signature", signature.encode())]
    ) as websocket:
        yield websocket


async def closed_by_archer(websocket: trio_websocket.WebSocketConnection) -> CloseReason | None:
    """Read until Archer closes the socket; its close reason."""
    with trio.fail_after(STEP_TIMEOUT):
        try:
            while True:
                await websocket.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason


async def send_raw(caller: TwilioCaller, message: str | bytes) -> None:
    """Put ``message`` on the media socket as it is (no validation, no sequence number)."""
    assert caller.websocket is not None
    await caller.websocket.send_message(message)


async def stop_if_open(caller: TwilioCaller) -> None:
    """Hang up, unless Archer already closed the socket (so a failure shows in the record)."""
    assert caller.websocket is not None
    if caller.websocket.closed is None:
        await caller.stop()


def speech(peer: AgentPeer) -> list[str]:
    """The caller audio the agent received, without the gap-filling silence."""
    return [event.audio for event in peer.of(managed.AudioInput) if event.audio != GAP_SILENCE]


async def wait_for_call(
    store: SqlCallStore, call_sid: str, done: Callable[[StoredCall], bool]
) -> StoredCall:
    """The call as stored once ``done`` holds and every call task has exited."""
    with trio.fail_after(STEP_TIMEOUT):
        while True:
            stored = await store.load_call(call_sid)
            if stored is not None and done(stored) and not live_archer_tasks():
                return stored
            await trio.sleep(0.05)


def ended(stored: StoredCall) -> bool:
    return stored.record.end_reason is not None


def assert_complete(stored: StoredCall, caller: TwilioCaller) -> None:
    """The row is a whole call: identified, timed, with an end reason from the documented set."""
    record = stored.record
    assert record.end_reason in END_REASONS
    assert record.status in ("completed", "failed")
    assert record.stream_sid == caller.stream_sid
    assert record.agent_call_id == "ac_e2eCall0001"
    assert record.connected_at is not None
    assert record.ended_at is not None
    assert record.duration_ms is not None


async def http_get(base_url: str, path: str) -> int:
    """The status of ``GET path`` on Archer (plain http on loopback)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = h11.Connection(h11.CLIENT)
    with trio.fail_after(STEP_TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            request = h11.Request(
                method="GET", target=path, headers=[("Host", host), ("Connection", "close")]
            )
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    return event.status_code


def next_caller(caller: TwilioCaller, n: int) -> TwilioCaller:
    """Another call to the same Archer, with its own call and stream ids."""
    return attrs.evolve(
        caller,
        call_sid=f"CA{n:032d}",
        stream_sid=f"MZ{n:032d}",
        stream_url="",
        parameters={},
        outbound=[],
        invalid=[],
        websocket=None,
        rejected_status=None,
        closed=trio.Event(),
    )


async def assert_still_serving(system: System) -> None:
    """``/healthz`` answers 200 and a fresh call is bridged and recorded as usual."""
    assert await http_get(system.caller.archer_url, "/healthz") == 200
    caller = next_caller(system.caller, 2)
    assert (await caller.dial()).status == 200
    async with trio.open_nursery() as nursery:
        await caller.connect(nursery)

        async def second_peer() -> bool:
            await trio.lowlevel.checkpoint()
            return len(system.agent.peers) >= 2

        with trio.fail_after(STEP_TIMEOUT):
            await eventually(second_peer, interval=0.01)
        peer = system.agent.peers[1]
        for tag in range(1, 4):
            await caller.speak(audio(tag))
        await peer.wait_for(lambda events: len(speech(peer)) >= 3)
        await caller.stop()
        stored = await wait_for_call(system.store, caller.call_sid, ended)
        nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert stored.record.frames_in == 3
    assert speech(peer) == [audio(tag) for tag in range(1, 4)]
    assert caller.invalid == []


async def listen(peer: AgentPeer) -> None:
    await peer.accept_session()


# --- garbage between good frames ---------------------------------------------------------------


@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_garbage_between_good_frames_keeps_the_call_up(
    database_url: str, media_listener: bool
) -> None:
    """Every garbage frame is skipped and counted; every good frame reaches the agent in order."""
    with structlog.testing.capture_logs() as logs:
        async with running_system(database_url, listen, media_listener=media_listener) as system:
            caller = system.caller
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                peer = await system.peer()
                garbage = garbage_frames(caller)
                good = [audio(tag) for tag in range(1, len(garbage) + 1)]
                for bad, payload in zip(garbage, good, strict=True):
                    await send_raw(caller, bad)
                    await caller.speak(payload)
                    await trio.sleep(0.01)
                await caller.press("7")
                await peer.wait_for(lambda events: bool(peer.of(managed.DtmfInput)))
                assert caller.websocket is not None
                assert caller.websocket.closed is None  # the call is still up
                await caller.stop()
                stored = await system.wait_for_record(ended)
                with trio.fail_after(STEP_TIMEOUT):
                    await caller.closed.wait()
                nursery.cancel_scope.cancel()
    assert speech(peer) == good
    assert [event.digit for event in peer.of(managed.DtmfInput)] == ["7"]
    assert peer.invalid == []
    record = stored.record
    assert (record.status, record.end_reason, record.error) == ("completed", "caller_hangup", None)
    assert (record.frames_in, record.frames_dropped) == (len(good), 0)
    assert_complete(stored, caller)
    [finished] = [entry for entry in logs if entry["event"] == "call.finished"]
    assert finished["frames_malformed"] == len(garbage)
    # Logged once per call, not once per frame.
    assert [entry["event"] for entry in logs].count("twilio.malformed_frame") == 1


# --- messages over the limit -------------------------------------------------------------------


@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_a_twilio_message_over_the_limit_closes_the_stream(
    database_url: str, media_listener: bool
) -> None:
    """A caller message over ``max_message_bytes``: socket closed 1009, the call is recorded."""
    async with running_system(
        database_url, listen, limits=SMALL_LIMITS, media_listener=media_listener
    ) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            for tag in range(1, 4):
                await caller.speak(audio(tag))
            await peer.wait_for(lambda events: len(speech(peer)) >= 3)
            oversized = audio(4, size=SMALL_LIMIT)  # valid media, but ~11 KB of JSON
            await caller.speak(oversized)
            with trio.fail_after(STEP_TIMEOUT):
                await caller.closed.wait()
            stored = await system.wait_for_record(ended)
            with trio.fail_after(STEP_TIMEOUT):
                await peer.closed.wait()
            nursery.cancel_scope.cancel()
        assert caller.websocket is not None
        assert caller.websocket.closed is not None
        assert caller.websocket.closed.code == 1009
        record = stored.record
        assert (record.status, record.end_reason) == ("completed", "twilio_disconnected")
        assert record.frames_in == 3
        assert_complete(stored, caller)
        assert speech(peer) == [audio(tag) for tag in range(1, 4)]
        await assert_still_serving(system)


async def test_an_agent_message_over_the_limit_fails_the_call(database_url: str) -> None:
    """An agent message over ``max_message_bytes``: closed 1009, ``agent_error``, recorded."""
    sessions = 0

    async def oversized_then_normal(peer: AgentPeer) -> None:
        nonlocal sessions
        sessions += 1
        await peer.accept_session()
        if sessions == 1:
            await peer.send(managed.turn_started(1, "assistant", 0.1))
            await peer.send(managed.audio_output(audio(9)))
            await peer.send(managed.audio_output(audio(9, size=SMALL_LIMIT)))

    async with running_system(database_url, oversized_then_normal, limits=SMALL_LIMITS) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            stored = await system.wait_for_record(ended)
            with trio.fail_after(STEP_TIMEOUT):
                await caller.closed.wait()
                await peer.closed.wait()
            nursery.cancel_scope.cancel()
        assert peer.websocket.closed is not None
        assert peer.websocket.closed.code == 1009
        record = stored.record
        assert (record.status, record.end_reason) == ("failed", "agent_error")
        assert "1009" in (record.error or "")
        assert_complete(stored, caller)
        assert caller.media() == [audio(9)]  # what came before the oversized message
        await assert_still_serving(system)


# --- inputs that once crashed a live call (regression tests) -----------------------------------


async def test_a_superscript_timestamp_is_skipped_like_any_bad_frame(database_url: str) -> None:
    """A media frame whose timestamp is ``"²"`` is one malformed frame, not the end of the call."""
    async with running_system(database_url, listen) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            bad: dict[str, Any] = {"event": "media", "media": {"payload": audio(1)}}
            bad["media"].update({"timestamp": "²", "chunk": "1"})
            await send_raw(caller, json.dumps(bad))
            await caller.speak(audio(2))
            await trio.sleep(0.2)
            await stop_if_open(caller)
            stored = await system.wait_for_record(ended)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert speech(peer) == [audio(2)]


async def test_an_agent_time_too_large_for_a_float_is_ignored(database_url: str) -> None:
    """``turn_started`` with a 400-digit ``start_time``: a time Archer only records reads as
    absent (issue 16: drift in a logged-only field never ends a call), and the call goes on."""

    async def huge_time(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(
            '{"type":"turn_started","turn":1,"role":"user","start_time":1' + "0" * 400 + "}"
        )
        await peer.send(managed.audio_output(audio(7)))

    async with running_system(database_url, huge_time) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            await system.caller.wait_for(lambda frames: audio(7) in system.caller.media())
            await system.caller.stop()
            stored = await system.wait_for_record(ended)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert [(turn.turn, turn.start_time) for turn in stored.record.turns] == [(1, None)]


async def test_an_empty_binary_frame_before_start_is_a_bad_start(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty binary frame where ``start`` should be is refused like any bad start frame."""
    with structlog.testing.capture_logs() as logs:
        async with running_system(database_url, listen) as system:
            await system.caller.dial()
            async with bare_stream(system.caller) as websocket:
                await websocket.send_message(b"")
                await closed_by_archer(websocket)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert "stream.bad_start" in [entry["event"] for entry in logs]


async def test_an_empty_binary_frame_mid_call_is_skipped(database_url: str) -> None:
    """An empty binary frame between good ones is one malformed frame; the call goes on."""
    async with running_system(database_url, listen) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            await caller.speak(audio(1))
            await send_raw(caller, b"")
            await caller.speak(audio(2))
            await trio.sleep(0.2)
            await stop_if_open(caller)
            stored = await system.wait_for_record(ended)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert speech(peer) == [audio(1), audio(2)]
