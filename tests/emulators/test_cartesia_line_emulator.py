"""The Cartesia emulator's Line endpoint (``/agents/stream``), driven by a raw client over loopback.

Real clock and real sockets, so every wait is bounded by ``fail_after``. Speech is synthetic: a
1 kHz tone at -10 dBFS is "speech" and μ-law 0xFF is silence. Every message the emulator sends
is parsed with the Line codec's client-side parser as it arrives.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio_websocket

from archer.audio import clips, g711
from archer.cartesia import line, managed
from archer.emulators.cartesia.line_messages import Start
from archer.emulators.cartesia.line_wire import transfer_call
from archer.emulators.cartesia.script import (
    AgentScriptError,
    CallTool,
    Say,
    Transfer,
    load_agent_script,
    parse_agent_script,
)
from archer.emulators.cartesia.server import CartesiaEmulator
from archer.websocket_client import open_websocket_client
from tests.emulators.test_cartesia_emulator import (
    Agent,
    frames,
    rejected_status,
    running,
    tone,
)

API_KEY = "sk_car_emulator_test_key"
AGENT_ID = "agent_emulated"
PATH = f"/agents/stream/{AGENT_ID}"
STEP_TIMEOUT = 10.0
FRAME = 0.02
E = TypeVar("E")


@attrs.define
class Client:
    """Archer's side of one Line stream, reduced to a raw socket and a log of what arrived."""

    websocket: trio_websocket.WebSocketConnection
    stream_id: str = "call-123"
    events: list[line.ServerEvent] = attrs.Factory(list)
    #: Arrival time of each ``media_output``.
    audio_times: list[float] = attrs.Factory(list)
    #: Every message's ``stream_id`` as sent, to check the emulator echoes it.
    raw: list[str] = attrs.Factory(list)
    close: trio_websocket.CloseReason | None = None
    closed: trio.Event = attrs.Factory(trio.Event)
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def read_forever(self) -> None:
        try:
            while True:
                text = await self.websocket.get_message()
                assert isinstance(text, str)
                event = line.parse_server_event(text)
                assert not isinstance(event, line.Unknown | line.Error), text
                if isinstance(event, line.MediaOutput):
                    self.audio_times.append(trio.current_time())
                self.raw.append(text)
                self.events.append(event)
                self._arrived.set()
                self._arrived = trio.Event()
        except trio_websocket.ConnectionClosed as exc:
            self.close = exc.reason
            self.closed.set()
            self._arrived.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(STEP_TIMEOUT):
            while not predicate():
                assert not self.closed.is_set(), f"closed while waiting: {self.close}"
                await self._arrived.wait()

    async def wait_closed(self) -> trio_websocket.CloseReason:
        with trio.fail_after(STEP_TIMEOUT):
            await self.closed.wait()
        assert self.close is not None
        return self.close

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def start(self, input_format: str = "mulaw_8000", **fields: Any) -> line.Ack:
        """Send ``start`` and wait for ``ack``."""
        await self.send(
            line.start(
                input_format=input_format,
                metadata={"from": "+15551230000"},
                stream_id=self.stream_id,
                **fields,
            )
        )
        await self.wait_for(lambda: bool(self.of(line.Ack)))
        return self.of(line.Ack)[0]

    async def play(self, audio: list[bytes]) -> None:
        """Send caller frames at speaking pace, as Archer forwards Twilio's."""
        begin = trio.current_time()
        for index, frame in enumerate(audio):
            await trio.sleep_until(begin + index * FRAME)
            await self.send(line.media_input(self.stream_id, base64.b64encode(frame).decode()))

    async def send(self, text: str) -> None:
        await self.websocket.send_message(text)


@asynccontextmanager
async def connect(
    agent: Agent, *, path: str = PATH, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[Client]:
    """A raw client stream against ``agent``, reading in the background."""
    if headers is None:
        headers = [(b"X-API-Key", API_KEY.encode())]
    async with open_websocket_client(agent.url + path, extra_headers=headers) as websocket:
        client = Client(websocket)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_forever)
            yield client
            nursery.cancel_scope.cancel()


def decoded(event: line.MediaOutput) -> bytes:
    return base64.b64decode(event.payload, validate=True)


# ---- the upgrade and the first message ------------------------------------------------------


async def test_wrong_key_is_401_and_wrong_agent_is_404() -> None:
    """The Line path checks the key (401) and the agent id (404) as the managed one does."""
    async with running([{"pause": 0}]) as agent:
        url = agent.url + PATH
        assert await rejected_status(url, [(b"X-API-Key", b"sk_car_wrong")]) == 401
        assert await rejected_status(url, [(b"Authorization", b"Bearer sk_car_wrong")]) == 401
        assert await rejected_status(url, []) == 401
        key = [(b"X-API-Key", API_KEY.encode())]
        assert await rejected_status(agent.url + "/agents/stream/agent_other", key) == 404
        assert await rejected_status(agent.url + "/agents/streams/" + AGENT_ID, key) == 404
        assert agent.emulator.sessions == []


async def test_bearer_key_opens_a_line_session_and_version_is_recorded() -> None:
    """Authorization: Bearer works on the Line path; the session is marked as Line."""
    async with running([{"pause": 0}]) as agent:
        headers = [(b"Authorization", f"Bearer {API_KEY}".encode())]
        async with connect(agent, path=PATH + "?cartesia_version=2025-04-16", headers=headers) as c:
            await c.start()
        session = await agent.ended()
        assert (session.protocol, session.cartesia_version) == ("line", "2025-04-16")
        assert (session.ended_by, session.close_code) == ("client", 1000)


async def test_no_start_in_time_closes_1008() -> None:
    """Saying nothing for session_create_timeout gets a close 1008, and no ack."""
    async with running([{"pause": 0}], session_create_timeout=0.2) as agent:
        async with connect(agent) as client:
            close = await client.wait_closed()
        assert (close.code, close.reason) == (1008, "start must be the first message")
        assert not client.events
        session = await agent.ended()
        assert (session.ended_by, session.close_code) == ("agent", 1008)


@pytest.mark.parametrize(
    "first",
    [
        line.dtmf("call-123", "5"),
        line.media_input("call-123", "//8="),
        '{"event":"start","config":{"input_format":"mulaw_9000"}}',
        "not json",
    ],
)
async def test_anything_but_start_first_closes_1008(first: str) -> None:
    """Another event, a bad start or junk first: close 1008 'start must be the first message'."""
    async with running([{"pause": 0}]) as agent:
        async with connect(agent) as client:
            await client.send(first)
            close = await client.wait_closed()
        assert (close.code, close.reason) == (1008, "start must be the first message")
        assert not client.events
        session = await agent.ended()
        assert (session.ended_by, session.close_code) == ("agent", 1008)


async def test_ack_echoes_stream_id_config_and_overrides() -> None:
    """ack carries the client's stream_id, its config and its agent overrides."""
    async with running([{"pause": 0}]) as agent, connect(agent) as client:
        ack = await client.start("pcm_16000", voice_id="v-1", introduction="Hello!")
        assert ack.stream_id == "call-123"
        assert dict(ack.config) == {"input_format": "pcm_16000", "voice_id": "v-1"}
        assert '"agent":{"introduction":"Hello!"}' in client.raw[0]
        session = agent.session
        assert (session.protocol, session.stream_id, session.input_format) == (
            "line",
            "call-123",
            "pcm_16000",
        )
        assert session.metadata == {"from": "+15551230000"}
        assert session.events[0] == Start(
            "call-123", "pcm_16000", "v-1", "Hello!", None, {"from": "+15551230000"}
        )


async def test_ack_generates_a_stream_id_when_none_is_given() -> None:
    """No stream_id in start: the ack's is sid_ + 16 hex, and later events carry it."""
    async with running([{"say": "short"}]) as agent, connect(agent) as client:
        await client.send(line.start(input_format="mulaw_8000", metadata={}))
        await client.wait_for(lambda: len(client.of(line.MediaOutput)) == 10)
    [ack] = client.of(line.Ack)
    assert re.fullmatch(r"sid_[0-9a-f]{16}", ack.stream_id)
    assert '"agent"' not in client.raw[0]
    assert all(f'"stream_id":"{ack.stream_id}"' in text for text in client.raw)
    assert agent.session.stream_id == ack.stream_id


async def test_audio_within_ready_delay_is_dropped_and_counted() -> None:
    """Audio in the ready_delay window after ack is dropped and counted; later audio is kept."""
    async with running([{"pause": 0}], ready_delay=0.3) as agent:
        async with connect(agent) as client:
            await client.start()
            for frame in frames("mulaw_8000", 0.1, loud=False):  # 5 frames, at once
                await client.send(line.media_input("call-123", base64.b64encode(frame).decode()))
            await trio.sleep(0.4)
            await client.play(frames("mulaw_8000", 0.06, loud=False))
        session = await agent.ended()
        assert session.audio_dropped_before_ready == 5
        assert bytes(session.caller_audio) == bytes([g711.SILENCE]) * 3 * 160


# ---- speaking, barge-in ----------------------------------------------------------------------


async def test_say_paces_media_output_in_20ms_chunks_without_turn_events() -> None:
    """A 1 s clip is 50 160-byte media_output chunks over ~1 s; nothing but audio follows ack."""
    async with running([{"say": "second"}]) as agent, connect(agent) as client:
        await client.start()
        await client.wait_for(lambda: len(client.of(line.MediaOutput)) == 50)
        await trio.sleep(0.1)
    audio = client.of(line.MediaOutput)
    assert [len(decoded(event)) for event in audio] == [160] * 50
    assert decoded(audio[0]) == g711.encode_samples(tone(FRAME))
    assert 0.9 <= client.audio_times[-1] - client.audio_times[0] <= 1.4
    assert [type(event) for event in client.events] == [line.Ack] + [line.MediaOutput] * 50
    assert "agent says: one two three four five" in agent.lines


async def test_pcm_16000_chunks_are_640_bytes() -> None:
    """A 0.2 s clip in pcm_16000 is ten 640-byte chunks."""
    async with running([{"say": "short"}]) as agent, connect(agent) as client:
        await client.start("pcm_16000")
        await client.wait_for(lambda: len(client.of(line.MediaOutput)) == 10)
    assert [len(decoded(event)) for event in client.of(line.MediaOutput)] == [640] * 10


async def test_caller_speech_barges_in_with_clear() -> None:
    """Loud caller audio mid-clip: clear, the clip stops, and listen hears the caller."""
    steps: list[dict[str, Any]] = [
        {"say": "long"},
        {"listen": {"transcript": "Stop, please.", "timeout": 5}},
        {"dtmf": "9"},
    ]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.wait_for(lambda: len(client.of(line.MediaOutput)) >= 10)
        await client.play(
            frames("mulaw_8000", 0.5, loud=True) + frames("mulaw_8000", 0.8, loud=False)
        )
        await client.wait_for(lambda: bool(client.of(line.Dtmf)))  # the step after listen
    clear_at = client.events.index(client.of(line.Clear)[0])
    assert len(client.of(line.MediaOutput)) < 150  # a 3 s clip, cut short
    assert all(not isinstance(event, line.MediaOutput) for event in client.events[clear_at:])
    assert "agent hears the caller (barge-in)" in agent.lines
    assert "agent hears: Stop, please." in agent.lines


# ---- DTMF, tools, transfer, hang-up ---------------------------------------------------------


async def test_tool_round_trip_over_custom_events() -> None:
    """Keyed digits fill the tool call sent as custom; the custom answer is recorded."""
    steps: list[dict[str, Any]] = [
        {"collect_dtmf": {"digits": 4, "into": "pin", "timeout": 5}},
        {"tool": {"name": "verify_caller", "arguments": {"pin": "{pin}"}, "into": "verify"}},
        {"tool": {"name": "get_account_balance", "into": "balance"}},
        {"say": "short"},
    ]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        for digit in "1234":
            await client.send(line.dtmf("call-123", digit))
        await client.send(line.custom("call-123", {"note": "hello agent"}))
        await client.wait_for(lambda: bool(client.of(line.Custom)))
        verify = line.tool_request(client.of(line.Custom)[0].metadata)
        assert verify is not None
        assert (verify.name, dict(verify.arguments)) == ("verify_caller", {"pin": "1234"})
        assert re.fullmatch(r"call_[0-9a-f]{12}", verify.tool_call_id)
        await client.send(line.tool_result("call-123", verify.tool_call_id, "ok", is_error=False))
        await client.wait_for(lambda: len(client.of(line.Custom)) == 2)
        balance = line.tool_request(client.of(line.Custom)[1].metadata)
        assert balance is not None
        await client.send(
            line.tool_result("call-123", balance.tool_call_id, "bank down", is_error=True)
        )
        await client.wait_for(lambda: len(client.of(line.MediaOutput)) == 10)
    session = agent.session
    assert session.dtmf_digits == ["1", "2", "3", "4"]
    assert session.variables == {"pin": "1234", "verify": "ok", "balance": "bank down"}
    assert session.tool_results[balance.tool_call_id].is_error
    assert session.custom_received == [{"note": "hello agent"}]
    assert "get_account_balance failed: bank down" in agent.lines


async def test_tool_timeout_goes_on_and_unknown_results_are_ignored() -> None:
    """No answer in time: the script goes on; a result for an unknown id changes nothing."""
    steps: list[dict[str, Any]] = [
        {"tool": {"name": "freeze_card", "timeout": 0.2}},
        {"say": "short"},
    ]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.send(line.tool_result("call-123", "call_000000000000", "?", is_error=False))
        await client.wait_for(lambda: len(client.of(line.MediaOutput)) == 10)
    assert "freeze_card timed out after 0.2 s" in agent.lines
    assert agent.session.tool_results == {}
    assert agent.session.custom_received == []


async def test_agent_dtmf_transfer_and_hang_up() -> None:
    """dtmf and transfer steps send their events; hang_up closes 1000 'call ended by agent'."""
    steps: list[dict[str, Any]] = [
        {"dtmf": "12#"},
        {"transfer": {"number": "+15555550199"}},
        {"hang_up": {}},
    ]
    async with running(steps) as agent:
        async with connect(agent) as client:
            await client.start()
            close = await client.wait_closed()
        assert (close.code, close.reason) == (1000, line.CALL_ENDED_BY_AGENT)
        assert [event.digit for event in client.of(line.Dtmf)] == ["1", "2", "#"]
        [transfer] = client.of(line.TransferCall)
        assert transfer == line.TransferCall("+15555550199")
        session = await agent.ended()
        assert session.transfers == ["+15555550199"]
        assert (session.ended_by, session.close_code) == ("agent", 1000)
        assert "agent asks to transfer to +15555550199" in agent.lines


async def test_hang_up_with_a_reason() -> None:
    """A hang_up reason follows ', reason: ' in the close reason."""
    async with running([{"hang_up": {"reason": "caller is done"}}]) as agent:
        async with connect(agent) as client:
            await client.start()
            close = await client.wait_closed()
        assert (close.code, close.reason) == (1000, "call ended by agent, reason: caller is done")


async def test_junk_or_a_second_start_after_ack_closes_1008() -> None:
    """Line has no error event: a message that does not parse closes 1008 with the problem."""
    async with running([{"pause": 0}]) as agent:
        async with connect(agent) as client:
            await client.start()
            await client.send('{"event":"dtmf","dtmf":"x"}')
            close = await client.wait_closed()
        assert close.code == 1008
        assert close.reason is not None
        assert "DTMF" in close.reason


async def test_idle_client_is_closed_with_1000() -> None:
    """No client message for idle_timeout: close 1000 'connection idle timeout'."""
    async with running([{"pause": 0}], idle_timeout=0.3) as agent:
        async with connect(agent) as client:
            await client.start()
            await client.play(frames("mulaw_8000", 0.4, loud=False))  # keeps it alive
            assert not client.closed.is_set()
            close = await client.wait_closed()
        assert (close.code, close.reason) == (1000, line.IDLE_TIMEOUT)
        session = await agent.ended()
        assert (session.ended_by, session.close_code) == ("agent", 1000)


# ---- scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bank_demo_transfer", "bank_demo_transfer_line"])
def test_shipped_transfer_scripts_load(name: str) -> None:
    """Both transfer variants load with recorded clips; the Line one ends with a transfer step."""
    script = load_agent_script(name)
    assert script.clip_names() <= clips.CLIP_NAMES
    tools = [step.name for step in script.steps if isinstance(step, CallTool)]
    assert tools[:2] == ["collect_pin", "get_account_balance"]  # the PIN by keypad (issue 21)
    assert script.steps[-2] == Say("agent_transfer", interruptible=False)
    if name.endswith("_line"):
        assert script.steps[-1] == Transfer("+15555550199")
        assert script.line_only()
    else:
        assert not script.line_only()
    CartesiaEmulator(api_key=API_KEY, script=script)


async def test_a_line_only_script_fails_a_managed_session_at_its_start() -> None:
    """A managed session cannot transfer: agent_failed at session_create, then close 1011."""
    async with running([{"transfer": {"number": "+15555550199"}}]) as agent:
        path = f"/v1/agents/websocket/{AGENT_ID}"
        headers = [(b"X-API-Key", API_KEY.encode())]
        async with open_websocket_client(agent.url + path, extra_headers=headers) as websocket:
            await websocket.send_message(
                managed.session_create(input_format="mulaw_8000", dynamic_variables={})
            )
            error = managed.parse_server_event(await websocket.get_message())
            assert isinstance(error, managed.Error)
            assert (error.code, error.fatal) == ("agent_failed", True)
            assert "transfer is a Line step" in error.message
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await websocket.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1011


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"transfer": {}}, "exactly one of 'number' or 'sip_uri'"),
        ({"transfer": {"number": "+1", "sip_uri": "sip:a@b"}}, "exactly one of"),
        ({"transfer": {"number": ""}}, "1 to 300 characters"),
        ({"transfer": {"number": "+1555", "shape": "round"}}, "'shape' must be one of"),
        ({"transfer": {"sip_uri": "sip:a@b", "shape": "nested"}}, "only travels as a destination"),
        ({"transfer": {"number": "+1555", "to": "x"}}, "unknown key 'to'"),
    ],
)
def test_invalid_transfer_steps_are_refused(step: dict[str, Any], problem: str) -> None:
    """A transfer step names exactly one target, as a number or a SIP URI, in a known shape."""
    with pytest.raises(AgentScriptError, match=re.escape(problem)):
        parse_agent_script({"steps": [step]}, name="bad")


@pytest.mark.parametrize(
    ("step", "wire"),
    [
        (
            {"number": "+15555550199"},
            {"transfer_destination": {"type": "phone", "value": "+15555550199"}},
        ),
        (
            {"sip_uri": "sip:desk@pbx.example.com"},
            {"transfer_destination": {"type": "sip_uri", "value": "sip:desk@pbx.example.com"}},
        ),
        (
            {"number": "+15555550199", "shape": "nested"},
            {"transfer": {"target_phone_number": "+15555550199"}},
        ),
        ({"number": "+15555550199", "shape": "flat"}, {"target_phone_number": "+15555550199"}),
        # A broken agent's target goes out as written, so clients can be tested against it.
        (
            {"number": "call my manager"},
            {"transfer_destination": {"type": "phone", "value": "call my manager"}},
        ),
    ],
)
def test_transfer_steps_are_sent_in_the_shape_they_name(
    step: dict[str, Any], wire: dict[str, object]
) -> None:
    """The emulator writes transfer_call itself: the Line SDK's shape by default, or another."""
    [transfer] = parse_agent_script({"steps": [{"transfer": step}]}, name="t").steps
    assert isinstance(transfer, Transfer)
    message = json.loads(transfer_call("sid_1", transfer))
    assert message == {"event": "transfer_call", "stream_id": "sid_1", **wire}
