"""End-to-end calls over loopback: real hypercorn, real WebSockets, the real database.

Archer runs in-process (``archer.server.serve`` on port 0); Twilio is ``TwilioCaller``, the agent
is ``AgentServer`` (both in ``tests/e2e/peers.py``). Real clock and real threads, so every wait
is bounded by ``fail_after``. Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from archer.call.tools import Tool, ToolContext, ToolRegistry, ToolResult
from archer.cartesia import managed
from archer.db.store import SqlCallStore, StoredCall
from archer.server import serve
from archer.settings import CallLimits, Settings
from archer.websocket_stream import HandshakeRefused, connect_websocket
from tests.e2e.peers import STEP_TIMEOUT, AgentBehaviour, AgentPeer, AgentServer, TwilioCaller
from tests.helpers import audio, live_archer_tasks

PUBLIC_BASE_URL = "https://archer.test"
AUTH_TOKEN = "e2e-twilio-auth-token"


async def _echo(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    return ToolResult({"echo": dict(arguments), "customer_id": context.customer_id})


async def _slow_echo(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    await trio.sleep(5)
    return ToolResult({"echo": dict(arguments)})


E2E_TOOLS = ToolRegistry.of(Tool("echo", _echo), Tool("slow_echo", _slow_echo))


@attrs.define
class System:
    """Archer, its agent and a caller, all on loopback."""

    settings: Settings
    agent: AgentServer
    caller: TwilioCaller
    store: SqlCallStore

    @property
    def settings_spool_path(self) -> Path:
        return Path(self.settings.spool_path)

    async def peer(self) -> AgentPeer:
        return await self.agent.first_peer()

    async def wait_for_record(self, done: Callable[[StoredCall], bool]) -> StoredCall:
        """The call as stored, once ``done`` holds for it and every call task has exited."""
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                stored = await self.store.load_call(self.caller.call_sid)
                if stored is not None and done(stored) and not live_archer_tasks():
                    return stored
                await trio.sleep(0.05)


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def running_system(
    database_url: str,
    behaviour: AgentBehaviour,
    *,
    limits: CallLimits | None = None,
    agent_url: str | None = None,
    tools: ToolRegistry | None = E2E_TOOLS,
    twilio_api_base_url: str = "https://api.twilio.invalid",
    human_agent_number: str = "",
    transfer_allowlist: frozenset[str] = frozenset(),
    twilio_shared_keys: Mapping[str, str] | None = None,
    audio_format: str = "mulaw_8000",
    spool_replay_interval: float = 30.0,
    protocol: str = "managed",
    agent_server_url: str | None = None,
    media_listener: bool = False,
    pin_entry: str = "keypad",
    dtmf_to_agent: bool = True,
    reconnect_attempts: int = 0,
    reconnect_window: float = 15.0,
) -> AsyncIterator[System]:
    """Archer (with ``tools``; None for the real banking tools) and its agent, on loopback.

    ``media_listener``: media streams go to the dedicated listener (``MEDIA_PORT``).
    ``reconnect_attempts``: 0 (off) unless a test is about reconnecting, so the fault tests
    see each failure's own end reason (issue 16).
    """
    media_port = closed_port() if media_listener else 0
    spool_dir = Path(tempfile.mkdtemp(prefix="archer-spool-"))
    async with trio.open_nursery() as nursery:
        agent = AgentServer(behaviour)
        await nursery.start(agent.run)
        settings = Settings(
            twilio_api_base_url=twilio_api_base_url,
            human_agent_number=human_agent_number,
            transfer_allowlist=transfer_allowlist,
            cartesia_audio_format=audio_format,
            spool_path=str(spool_dir / "calls.jsonl"),
            spool_replay_interval=spool_replay_interval,
            database_url=database_url,
            webhook_base_url=PUBLIC_BASE_URL,
            twilio_account_sid="AC" + "e2e2" * 8,
            twilio_auth_token=AUTH_TOKEN,
            twilio_shared_keys=dict(twilio_shared_keys or {}),
            cartesia_api_key=agent.api_key,
            cartesia_agent_id="agent_e2e",
            cartesia_ws_url=agent_url or agent_server_url or agent.url,
            cartesia_protocol=protocol,
            media_port=media_port,
            pin_entry=pin_entry,
            # The main scenario checks that keys are forwarded (DTMF_TO_AGENT=true); the keypad
            # tests (test_keypad_pin.py) turn it off, as it is by default.
            dtmf_to_agent=dtmf_to_agent,
            agent_reconnect_attempts=reconnect_attempts,
            agent_reconnect_window=reconnect_window,
            # The test caller sends media only when told (Twilio would every 20 ms): a quiet
            # test caller is not a lost stream unless a test sets a short media timeout.
            limits=limits
            or CallLimits(agent_ready_timeout=2.0, flush_timeout=5.0, twilio_media_timeout=60.0),
        )
        urls = await nursery.start(
            partial(
                serve,
                settings,
                host="127.0.0.1",
                port=0,
                tools=tools,
                shutdown_trigger=trio.sleep_forever,
            )
        )
        store = SqlCallStore.open(database_url, pool_size=2)
        caller = TwilioCaller(
            archer_url=urls[0],
            public_base_url=PUBLIC_BASE_URL,
            auth_token=AUTH_TOKEN,
            media_url=f"http://127.0.0.1:{media_port}" if media_port else None,
        )
        try:
            yield System(settings, agent, caller, store)
        finally:
            await store.aclose()
            nursery.cancel_scope.cancel()


def _count(kind: type[object]) -> Callable[[list[managed.ClientEvent]], int]:
    return lambda events: sum(isinstance(event, kind) for event in events)


async def conversation(peer: AgentPeer) -> None:
    """The agent's half of the main scenario: greet, listen, get interrupted, run a tool."""
    await peer.accept_session()
    await peer.send(managed.turn_started(1, "assistant", 0.1))
    for word in ("Hello, ", "how can ", "I help?"):
        await peer.send(managed.turn_output_text_delta(1, word))
    for tag in range(5):
        await peer.send(managed.audio_output(audio(100 + tag)))
    await peer.send(
        managed.turn_ended(
            1, "assistant", "Hello, how can I help?", interrupted=False, start_time=0.1, end_time=1
        )
    )
    await peer.wait_for(lambda events: _count(managed.AudioInput)(events) >= 10)
    # A long answer, interrupted: a burst of audio, the clear, then the next turn's audio.
    for tag in range(20):
        await peer.send(managed.audio_output(audio(150 + tag)))
    await peer.send(managed.audio_output_clear())
    await peer.send(managed.audio_output(audio(199)))  # the interrupted turn's tail: dropped
    await peer.send(managed.turn_started(2, "assistant", 1.5))
    await peer.send(managed.audio_output(audio(200)))
    await peer.send(
        managed.turn_ended(2, "assistant", "Sure.", interrupted=False, start_time=1.5, end_time=1.6)
    )
    await peer.wait_for(lambda events: _count(managed.DtmfInput)(events) >= 1)
    await peer.send(
        managed.client_tool_call(
            "call_e2e_1", "echo", {"account_type": "checking"}, expects_response=True
        )
    )
    await peer.wait_for(lambda events: _count(managed.ClientToolResult)(events) >= 1)
    await peer.send(managed.turn_started(3, "user", 2.0))
    await peer.send(
        managed.turn_ended(
            3, "user", "What's my balance?", interrupted=False, start_time=2.0, end_time=3.0
        )
    )


@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_a_whole_call_is_bridged_and_recorded(
    database_url: str, media_listener: bool
) -> None:
    """Audio both ways, clear, DTMF and a tool call over real sockets, all in the record, with
    media on the quart-trio route and on the dedicated listener (MEDIA_PORT)."""
    async with running_system(database_url, conversation, media_listener=media_listener) as system:
        caller = system.caller
        answer = await caller.dial()
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/xml")
        assert caller.stream_url == "wss://archer.test/ws/cartesia"
        assert set(caller.parameters) == {"call_sid", "customer_id", "customer_phone", "token"}
        assert ET.fromstring(answer.text)[-1].tag == "Hangup"
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            await caller.wait_for(lambda frames: len(caller.media()) >= 5)
            for tag in range(10):
                await caller.speak(audio(tag))
                await trio.sleep(0.02)
            await caller.wait_for(lambda frames: audio(200) in caller.media())
            await caller.press("5")
            await peer.wait_for(lambda events: _count(managed.ClientToolResult)(events) >= 1)
            await trio.sleep(0.2)  # let the agent's user turn land before the caller hangs up
            await caller.stop()
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            await caller.post(
                "/twilio/status",
                {**caller.webhook_fields(), "CallStatus": "completed", "CallDuration": "12"},
            )
            with trio.fail_after(STEP_TIMEOUT):
                await peer.closed.wait()
            nursery.cancel_scope.cancel()

        assert peer.invalid == []
        assert caller.invalid == []
        create = peer.received[0]
        assert isinstance(create, managed.SessionCreate)
        assert create.input_format == "mulaw_8000"
        assert create.dynamic_variables["call_sid"] == caller.call_sid
        assert create.dynamic_variables["caller_number"] == caller.from_number
        # Caller audio arrives unchanged and in order.
        assert [event.audio for event in peer.of(managed.AudioInput)] == [
            audio(tag) for tag in range(10)
        ]
        # The greeting reached the caller as Twilio media frames.
        media = caller.media()
        assert media[:5] == [audio(100 + tag) for tag in range(5)]
        # After the clear, nothing queued before it: only the next turn's audio.
        events = [frame["event"] for frame in caller.outbound]
        clear_at = events.index("clear")
        after_clear = [f["media"]["payload"] for f in caller.outbound[clear_at:] if "media" in f]
        assert after_clear == [audio(200)]
        assert [event.digit for event in peer.of(managed.DtmfInput)] == ["5"]
        [result] = peer.of(managed.ClientToolResult)
        assert result.tool_call_id == "call_e2e_1"
        assert not result.is_error
        assert '"account_type":"checking"' in result.result

        stored = await system.store.load_call(caller.call_sid)
        assert stored is not None
        record = stored.record
        assert (record.status, record.end_reason, record.error) == (
            "completed",
            "caller_hangup",
            None,
        )
        assert record.stream_sid == caller.stream_sid
        assert record.agent_call_id == "ac_e2eCall0001"
        assert record.customer_id is not None
        assert record.from_number == caller.from_number
        assert record.connected_at is not None
        assert record.ended_at is not None
        assert record.duration_ms is not None
        assert record.duration_ms > 200
        assert (record.frames_in, record.frames_out, record.frames_dropped) == (
            10,
            len(media),
            0,
        )
        assert [(t.turn, t.role, t.text, t.interrupted) for t in record.turns] == [
            (1, "assistant", "Hello, how can I help?", False),
            (2, "assistant", "Sure.", False),
            (3, "user", "What's my balance?", False),
        ]
        [tool_call] = record.tool_calls
        assert (tool_call.name, tool_call.is_error) == ("echo", False)
        assert tool_call.arguments == {"account_type": "checking"}
        assert tool_call.result == result.result
        assert tool_call.finished_at is not None
        assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 12)


async def test_agent_hangup_hangs_up_the_caller(database_url: str) -> None:
    """The agent closing 1000 ends the call as ``agent_hangup`` and closes Twilio's socket."""

    async def say_goodbye(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        await peer.send(managed.audio_output(audio(1)))
        await peer.send(
            managed.turn_ended(
                1, "assistant", "Goodbye.", interrupted=False, start_time=0.1, end_time=0.5
            )
        )
        await peer.websocket.aclose(1000, "call ended by agent")

    async with running_system(database_url, say_goodbye) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            with trio.fail_after(STEP_TIMEOUT):
                await system.caller.closed.wait()
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "agent_hangup")
    assert [t.text for t in stored.record.turns] == ["Goodbye."]


async def test_agent_closing_1011_mid_call(database_url: str) -> None:
    """A 1011 close fails the call with the code recorded, keeps the turns, hangs up Twilio."""

    async def fail_midway(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        await peer.send(managed.turn_output_text_delta(1, "Let me check"))
        await peer.send(
            managed.turn_ended(
                1, "assistant", "Let me check", interrupted=False, start_time=0.1, end_time=0.4
            )
        )
        await peer.wait_for(lambda events: _count(managed.AudioInput)(events) >= 3)
        await peer.websocket.aclose(1011, "agent failed")

    async with running_system(database_url, fail_midway) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            for tag in range(3):
                await system.caller.speak(audio(tag))
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            with trio.fail_after(STEP_TIMEOUT):
                await system.caller.closed.wait()
            nursery.cancel_scope.cancel()
    record = stored.record
    assert (record.status, record.end_reason) == ("failed", "agent_error")
    assert "1011" in (record.error or "")
    assert [(t.turn, t.text) for t in record.turns] == [(1, "Let me check")]
    assert record.frames_in == 3


async def test_agent_never_answers_session_create(database_url: str) -> None:
    """No ``session_ready`` within the deadline fails the call as a handshake timeout."""

    async def silent(peer: AgentPeer) -> None:
        await peer.closed.wait()

    limits = CallLimits(agent_ready_timeout=0.5)
    async with running_system(database_url, silent, limits=limits) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == (
        "failed",
        "agent_handshake_timeout",
    )
    assert "session_ready" in (stored.record.error or "")


async def test_agent_unreachable(database_url: str) -> None:
    """An agent URL nobody listens on fails the call as ``agent_unreachable``."""

    async def unused(peer: AgentPeer) -> None:
        raise AssertionError("nothing should connect")

    agent_url = f"ws://127.0.0.1:{closed_port()}"
    async with running_system(database_url, unused, agent_url=agent_url) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("failed", "agent_unreachable")
    assert system.agent.peers == []


@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_twilio_socket_dropped_without_stop(database_url: str, media_listener: bool) -> None:
    """Twilio's socket vanishing ends the call as ``twilio_disconnected``; the agent is closed."""

    async def greet(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        await peer.send(
            managed.turn_ended(
                1, "assistant", "Hello.", interrupted=False, start_time=0.1, end_time=0.3
            )
        )

    async with running_system(database_url, greet, media_listener=media_listener) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            for tag in range(4):
                await system.caller.speak(audio(tag))
            await (await system.peer()).wait_for(
                lambda events: _count(managed.AudioInput)(events) >= 4
            )
            await system.caller.drop()
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            with trio.fail_after(STEP_TIMEOUT):
                await (await system.peer()).closed.wait()
            nursery.cancel_scope.cancel()
    record = stored.record
    assert (record.status, record.end_reason) == ("completed", "twilio_disconnected")
    assert [t.text for t in record.turns] == ["Hello."]
    assert record.frames_in == 4


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stream_without_a_valid_token_is_refused(database_url: str) -> None:
    """A second stream with a spent token, or one with a made-up token, never reaches the agent."""

    async def hang_up_at_once(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.websocket.aclose(1000, "call ended by agent")

    async with running_system(database_url, hang_up_at_once) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            replay = attrs.evolve(
                caller, stream_sid="MZ" + "9" * 32, outbound=[], websocket=None, closed=trio.Event()
            )
            await replay.connect(nursery)
            forged = attrs.evolve(
                caller,
                stream_sid="MZ" + "8" * 32,
                parameters={**caller.parameters, "token": "made-up"},
                outbound=[],
                websocket=None,
                closed=trio.Event(),
            )
            await forged.connect(nursery)
            with trio.fail_after(STEP_TIMEOUT):
                await replay.closed.wait()
                await forged.closed.wait()
            nursery.cancel_scope.cancel()
        assert len(system.agent.peers) == 1
        stored = await system.store.load_call(caller.call_sid)
        assert stored is not None
        assert stored.record.stream_sid == caller.stream_sid


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("signature", ["forged", "", "other-url"])
@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_a_forged_stream_upgrade_is_refused_before_accept(
    database_url: str, signature: str, media_listener: bool
) -> None:
    """An upgrade without Twilio's signature gets HTTP 403 and never becomes a call."""

    async def unused(peer: AgentPeer) -> None:
        raise AssertionError("nothing should connect")

    async with running_system(database_url, unused, media_listener=media_listener) as system:
        caller = system.caller
        await caller.dial()
        if signature == "other-url":  # Twilio's real signature, but of another stream URL
            signature = caller.signer.sign("wss://archer.evil.example/ws/cartesia", {})
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery, signature=signature)
        assert caller.rejected_status == 403
        assert system.agent.peers == []
        stored = await system.store.load_call(caller.call_sid)
        assert stored is not None
        assert (stored.record.status, stored.record.stream_sid) == ("initiated", None)


@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_the_trailing_slash_variant_of_the_stream_url_is_accepted(
    database_url: str, media_listener: bool
) -> None:
    """Twilio sometimes signs the stream URL with a trailing slash; that is still Twilio."""

    async with running_system(
        database_url, _hang_up_at_once, media_listener=media_listener
    ) as system:
        caller = system.caller
        await caller.dial()
        slashed = caller.signer.sign(caller.stream_url + "/", {})
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery, signature=slashed)
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        assert caller.rejected_status is None
        assert stored.record.end_reason == "agent_hangup"


async def _hang_up_at_once(peer: AgentPeer) -> None:
    await peer.accept_session()
    await peer.websocket.aclose(1000, "call ended by agent")


async def test_the_media_listener_serves_only_the_stream_path(sqlite_url: str) -> None:
    """Another path on MEDIA_PORT is 404 and never reaches the agent; the listener goes on."""
    async with running_system(sqlite_url, _hang_up_at_once, media_listener=True) as system:
        caller = system.caller
        assert caller.media_url is not None
        port = int(caller.media_url.rsplit(":", 1)[1])
        with pytest.raises(HandshakeRefused) as refused:
            async with connect_websocket("127.0.0.1", port, "/twilio/voice"):
                pass
        assert refused.value.status == 404
        # Not a WebSocket upgrade at all: the connection is closed without an answer.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GARBAGE / HTTP/9\r\n\r\n")
            with trio.fail_after(STEP_TIMEOUT):
                assert await stream.receive_some(100) == b""
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        assert stored.record.end_reason == "agent_hangup"
        assert len(system.agent.peers) == 1
