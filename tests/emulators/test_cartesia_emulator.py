"""The Cartesia Managed Agents emulator, driven by a raw client over real loopback sockets.

Real clock and real sockets, so every wait is bounded by ``fail_after``. Speech is synthetic: a
1 kHz tone at -10 dBFS is "speech" and μ-law 0xFF is silence. Every message the emulator sends is
checked against Cartesia's published schema as it arrives.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np
import pytest
import trio
import trio_websocket

from archer.audio import clips, g711
from archer.cartesia import managed
from archer.emulators.cartesia.managed_wire import SentError
from archer.emulators.cartesia.script import (
    AgentScriptError,
    CallTool,
    Say,
    load_agent_script,
    parse_agent_script,
)
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from archer.emulators.cartesia.session import Clip
from archer.websocket_client import open_websocket_client
from tests.contract.schemas import validate_cartesia_server_message

API_KEY = "sk_car_emulator_test_key"
AGENT_ID = "agent_emulated"
VERSION = "2026-08-14"
PATH = f"/v1/agents/websocket/{AGENT_ID}?cartesia_version={VERSION}"
STEP_TIMEOUT = 10.0
FRAME = 0.02
E = TypeVar("E")


def tone(seconds: float, rate: int = 8000) -> np.ndarray[Any, np.dtype[np.int16]]:
    """A 1 kHz sine peaking at -10 dBFS."""
    t = np.arange(round(seconds * rate)) / rate
    return np.round(32767 * 10 ** (-10 / 20) * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)


def frames(fmt: str, seconds: float, *, loud: bool) -> list[bytes]:
    """20 ms caller frames in ``fmt``: the tone when ``loud``, else silence."""
    rate = int(fmt.split("_")[1])
    count = round(seconds / FRAME)
    if fmt == "mulaw_8000":
        one = g711.encode_samples(tone(FRAME)) if loud else bytes([g711.SILENCE]) * 160
    else:
        samples = tone(FRAME, rate) if loud else np.zeros(rate // 50, dtype=np.int16)
        one = samples.astype("<i2").tobytes()
    return [one] * count


CLIPS = {
    "second": Clip(g711.encode_samples(tone(1.0)), "one two three four five"),
    "short": Clip(g711.encode_samples(tone(0.2)), "Hi there."),
    "long": Clip(g711.encode_samples(tone(3.0)), "a b c d e f g h i j k l m n o"),
}


@attrs.define
class Agent:
    """A running emulator, its URL and the progress lines it printed."""

    emulator: CartesiaEmulator
    url: str
    lines: list[str]

    @property
    def session(self) -> Any:
        assert len(self.emulator.sessions) == 1
        return self.emulator.sessions[0]

    async def ended(self) -> Any:
        with trio.fail_after(STEP_TIMEOUT):
            await self.session.ended.wait()
        return self.session


@asynccontextmanager
async def running(steps: list[dict[str, Any]], **settings: Any) -> AsyncIterator[Agent]:
    """The emulator playing ``steps`` with the synthetic clips, on a loopback port."""
    lines: list[str] = []
    script = parse_agent_script({"steps": steps}, name="test")
    emulator = CartesiaEmulator(
        api_key=API_KEY, script=script, clips=CLIPS.__getitem__, progress=lines.append, **settings
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_cartesia_emulator, emulator))
        yield Agent(emulator, url, lines)
        nursery.cancel_scope.cancel()


@attrs.define
class Client:
    """Archer's side of one session, reduced to a raw socket and a log of what arrived."""

    websocket: trio_websocket.WebSocketConnection
    events: list[managed.ServerEvent] = attrs.Factory(list)
    #: Arrival time of each ``audio_output``.
    audio_times: list[float] = attrs.Factory(list)
    close: trio_websocket.CloseReason | None = None
    closed: trio.Event = attrs.Factory(trio.Event)
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def read_forever(self) -> None:
        try:
            while True:
                text = await self.websocket.get_message()
                assert isinstance(text, str)
                validate_cartesia_server_message(text)
                event = managed.parse_server_event(text)
                if isinstance(event, managed.AudioOutput):
                    self.audio_times.append(trio.current_time())
                self.events.append(event)
                self._arrived.set()
                self._arrived = trio.Event()
        except trio_websocket.ConnectionClosed as exc:
            self.close = exc.reason
            self.closed.set()
            self._arrived.set()

    async def wait_for(self, predicate: Callable[[list[managed.ServerEvent]], bool]) -> None:
        with trio.fail_after(STEP_TIMEOUT):
            while not predicate(self.events):
                assert not self.closed.is_set(), f"closed while waiting: {self.close}"
                await self._arrived.wait()

    async def wait_closed(self) -> trio_websocket.CloseReason:
        with trio.fail_after(STEP_TIMEOUT):
            await self.closed.wait()
        assert self.close is not None
        return self.close

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def start(self, input_format: str = "mulaw_8000") -> managed.SessionReady:
        """Send ``session_create`` and wait for ``session_ready``."""
        await self.websocket.send_message(
            managed.session_create(input_format=input_format, dynamic_variables={"tier": "gold"})
        )
        await self.wait_for(lambda events: bool(self.of(managed.SessionReady)))
        return self.of(managed.SessionReady)[0]

    async def play(self, audio: list[bytes]) -> None:
        """Send caller frames at speaking pace, as Archer forwards Twilio's."""
        begin = trio.current_time()
        for index, frame in enumerate(audio):
            await trio.sleep_until(begin + index * FRAME)
            await self.websocket.send_message(
                managed.audio_input(base64.b64encode(frame).decode("ascii"))
            )

    async def send(self, text: str) -> None:
        await self.websocket.send_message(text)


@asynccontextmanager
async def connect(
    agent: Agent, *, path: str = PATH, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[Client]:
    """A raw client session against ``agent``, reading in the background."""
    if headers is None:
        headers = [(b"X-API-Key", API_KEY.encode())]
    async with open_websocket_client(agent.url + path, extra_headers=headers) as websocket:
        client = Client(websocket)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_forever)
            yield client
            nursery.cancel_scope.cancel()


async def rejected_status(url: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The HTTP status of a refused upgrade (fails if the upgrade is accepted)."""
    status = None
    try:
        async with open_websocket_client(url, extra_headers=headers):
            pass
    except* trio_websocket.ConnectionRejected as group:
        rejection = group.exceptions[0]
        assert isinstance(rejection, trio_websocket.ConnectionRejected)
        status = rejection.status_code
    assert status is not None, "the upgrade was accepted"
    return status


def decoded(event: managed.AudioOutput) -> bytes:
    return base64.b64decode(event.audio, validate=True)


# ---- the upgrade and the first message ------------------------------------------------------


async def test_wrong_api_key_is_refused_with_401() -> None:
    """A wrong or missing key is refused at the upgrade with HTTP 401."""
    async with running([{"pause": 0}]) as agent:
        url = agent.url + PATH
        assert await rejected_status(url, [(b"X-API-Key", b"sk_car_wrong")]) == 401
        assert await rejected_status(url, [(b"Authorization", b"Bearer sk_car_wrong")]) == 401
        assert await rejected_status(url, []) == 401
        assert agent.emulator.sessions == []


async def test_wrong_path_is_refused_with_404() -> None:
    """Another agent id or another endpoint is refused with HTTP 404."""
    async with running([{"pause": 0}]) as agent:
        key = [(b"X-API-Key", API_KEY.encode())]
        assert await rejected_status(agent.url + "/v1/agents/websocket/agent_other", key) == 404
        assert await rejected_status(agent.url + "/agents/stream/agent_other", key) == 404
        assert await rejected_status(agent.url + f"/v2/agents/websocket/{AGENT_ID}", key) == 404
        assert agent.emulator.sessions == []


async def test_bearer_key_and_version_header_are_accepted() -> None:
    """Authorization: Bearer works; the Cartesia-Version header is recorded without a query."""
    async with running([{"pause": 0}]) as agent:
        headers = [(b"Authorization", f"Bearer {API_KEY}".encode()), (b"Cartesia-Version", b"x1")]
        async with connect(agent, path=f"/v1/agents/websocket/{AGENT_ID}", headers=headers) as c:
            await c.start()
        assert agent.session.cartesia_version == "x1"


async def test_no_session_create_in_time_closes_1008() -> None:
    """Saying nothing for session_create_timeout gets a close 1008."""
    async with running([{"pause": 0}], session_create_timeout=0.2) as agent:
        async with connect(agent) as client:
            close = await client.wait_closed()
        assert close.code == 1008
        session = await agent.ended()
        assert (session.ended_by, session.close_code) == ("agent", 1008)
        assert not client.of(managed.SessionReady)


@pytest.mark.parametrize(
    ("first", "code", "problem"),
    [
        (
            '{"type":"session_create","audio":{"input_format":"mulaw_8000"},"bogus":1}',
            "invalid_event",
            "unknown field 'bogus'",
        ),
        (
            '{"type":"session_create","audio":{"input_format":"mulaw_8000"},'
            '"dynamic_variables":{"system__x":"1"}}',
            "invalid_dynamic_variables",
            "reserved prefix",
        ),
        ('{"type":"audio_input","audio":"//8="}', "invalid_event", "must be session_create"),
        ("not json", "invalid_event", "not valid JSON"),
    ],
)
async def test_bad_first_message_gets_fatal_error_and_1008(
    first: str, code: str, problem: str
) -> None:
    """An unknown field, bad variables, another event first or junk: fatal error, close 1008."""
    async with running([{"pause": 0}]) as agent:
        async with connect(agent) as client:
            await client.send(first)
            close = await client.wait_closed()
        assert close.code == 1008
        [error] = client.events
        assert isinstance(error, managed.Error)
        assert (error.code, error.fatal) == (code, True)
        assert problem in error.message
        session = await agent.ended()
        assert session.errors_sent == [SentError(error.code, error.message, error.fatal)]
        assert (session.ended_by, session.close_code) == ("agent", 1008)


async def test_session_ready_identifies_the_call_and_echoes_the_format() -> None:
    """session_ready carries ac_/av_ ids, the agent id and the requested audio settings."""
    async with running([{"pause": 0}]) as agent, connect(agent) as client:
        ready = await client.start("pcm_24000")
        assert re.fullmatch(r"ac_[A-Za-z0-9]{22}", ready.call_id)
        assert re.fullmatch(r"av_[A-Za-z0-9]{22}", ready.agent_version_id)
        assert ready.agent_id == AGENT_ID
        assert (ready.input_format, ready.output_delivery) == ("pcm_24000", "speaking_pace")
        session = agent.session
        assert session.call_id == ready.call_id
        assert session.cartesia_version == VERSION
        assert session.dynamic_variables == {"tier": "gold"}


async def test_audio_before_session_ready_is_dropped_and_counted() -> None:
    """Audio in the ready_delay window is dropped and counted; audio after it is kept."""
    async with running([{"pause": 0}], ready_delay=0.3) as agent:
        async with connect(agent) as client:
            await client.send(
                managed.session_create(input_format="mulaw_8000", dynamic_variables={})
            )
            for frame in frames("mulaw_8000", 0.1, loud=False):  # 5 frames, sent at once
                await client.send(managed.audio_input(base64.b64encode(frame).decode()))
            await client.wait_for(lambda events: bool(client.of(managed.SessionReady)))
            await client.play(frames("mulaw_8000", 0.06, loud=False))
        session = await agent.ended()
        assert session.audio_dropped_before_ready == 5
        assert bytes(session.caller_audio) == bytes([g711.SILENCE]) * 3 * 160
        assert session.input_format == "mulaw_8000"
        assert (session.ended_by, session.close_code) == ("client", 1000)


# ---- speaking, listening, barge-in ---------------------------------------------------------


async def test_say_paces_audio_with_deltas_and_shared_turns() -> None:
    """A 1 s clip is 50 160-byte chunks over ~1 s; deltas spread over it; turns count 1, 2."""
    steps = [{"say": "second"}, {"say": "short"}]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.wait_for(lambda events: len(client.of(managed.TurnEnded)) == 2)
    audio = client.of(managed.AudioOutput)
    assert [len(decoded(event)) for event in audio] == [160] * 60
    assert decoded(audio[0]) == g711.encode_samples(tone(FRAME))
    first_turn_span = client.audio_times[49] - client.audio_times[0]
    assert 0.9 <= first_turn_span <= 1.4
    started = client.of(managed.TurnStarted)
    ended = client.of(managed.TurnEnded)
    assert [(t.turn, t.role) for t in started] == [(1, "assistant"), (2, "assistant")]
    assert [(t.turn, t.text, t.interrupted) for t in ended] == [
        (1, "one two three four five", False),
        (2, "Hi there.", False),
    ]
    deltas = client.of(managed.TurnOutputTextDelta)
    assert "".join(d.text for d in deltas if d.turn == 1) == "one two three four five"
    assert {d.turn for d in deltas} == {1, 2}
    # The last of five words is due at the 40th of 50 chunks: words follow the speech.
    last_word = client.events.index(deltas[4])
    assert sum(isinstance(e, managed.AudioOutput) for e in client.events[:last_word]) == 40
    kinds = [type(e).__name__ for e in client.events if not isinstance(e, managed.AudioOutput)]
    assert kinds[:2] == ["SessionReady", "TurnStarted"]
    assert ended[0].end_time - ended[0].start_time == pytest.approx(1.0, abs=0.3)
    assert "agent says: one two three four five" in agent.lines


async def test_caller_speech_barges_in_on_an_interruptible_say() -> None:
    """Loud caller audio mid-clip: audio_output_clear, an interrupted turn, then the user turn."""
    steps = [{"say": "long"}, {"listen": {"transcript": "Stop, please.", "timeout": 5}}]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.wait_for(lambda events: len(client.of(managed.AudioOutput)) >= 10)
        await client.play(
            frames("mulaw_8000", 0.4, loud=True) + frames("mulaw_8000", 0.8, loud=False)
        )
        await client.wait_for(lambda events: len(client.of(managed.TurnEnded)) == 2)
    assert len(client.of(managed.AudioOutputClear)) == 1
    assistant, user = client.of(managed.TurnEnded)
    assert (assistant.turn, assistant.role, assistant.interrupted) == (1, "assistant", True)
    assert "a b c d e f g h i j k l m n o".startswith(assistant.text)
    assert len(assistant.text.split()) < 15
    assert (user.turn, user.role, user.text, user.interrupted) == (
        2,
        "user",
        "Stop, please.",
        False,
    )
    assert user.start_time < user.end_time
    clear = client.events.index(client.of(managed.AudioOutputClear)[0])
    assert not any(isinstance(e, managed.AudioOutput) for e in client.events[clear:])
    assert len(client.of(managed.AudioOutput)) < 150
    assert "agent hears the caller (barge-in)" in agent.lines


async def test_uninterruptible_say_plays_through_caller_speech() -> None:
    """With interruptible false, the clip plays to the end and the speech is heard after."""
    steps = [{"say": "second", "interruptible": False}, {"listen": {"transcript": "Hello."}}]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.play(
            frames("mulaw_8000", 0.3, loud=True) + frames("mulaw_8000", 1.4, loud=False)
        )
        await client.wait_for(lambda events: len(client.of(managed.TurnEnded)) == 2)
    assert not client.of(managed.AudioOutputClear)
    assistant, user = client.of(managed.TurnEnded)
    assert (assistant.interrupted, len(client.of(managed.AudioOutput))) == (False, 50)
    assert (user.role, user.text) == ("user", "Hello.")
    assert agent.lines.count("agent hears: Hello.") == 1


@pytest.mark.parametrize("fmt", ["mulaw_8000", "pcm_16000"])
async def test_listen_reports_a_user_turn_with_the_transcript(fmt: str) -> None:
    """Caller speech then 600 ms of quiet make one user turn with the script's transcript."""
    steps = [{"listen": {"transcript": "I'd like my balance.", "timeout": 5}}, {"say": "short"}]
    async with running(steps) as agent, connect(agent) as client:
        await client.start(fmt)
        audio = frames(fmt, 0.2, loud=False) + frames(fmt, 0.5, loud=True)
        await client.play(audio + frames(fmt, 0.8, loud=False))
        await client.wait_for(lambda events: len(client.of(managed.TurnEnded)) == 2)
    started, spoken = client.of(managed.TurnStarted)
    user, assistant = client.of(managed.TurnEnded)
    assert (started.turn, started.role) == (1, "user")
    assert (user.turn, user.text, user.interrupted) == (1, "I'd like my balance.", False)
    assert user.start_time == started.start_time
    # Speech started 0.2 s into the audio and lasted 0.5 s (times are session seconds).
    assert user.end_time - user.start_time == pytest.approx(0.5, abs=0.15)
    assert (spoken.turn, assistant.turn) == (2, 2)
    assert (
        len(agent.session.caller_audio)
        == sum(len(frame) for frame in audio) + len(frames(fmt, 0.8, loud=False)[0]) * 40
    )


async def test_listen_times_out_and_goes_on() -> None:
    """No speech within the listen timeout: no user turn, a progress line, the next step."""
    steps = [{"listen": {"transcript": "never", "timeout": 0.2}}, {"say": "short"}]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.wait_for(lambda events: bool(client.of(managed.TurnEnded)))
    [turn] = client.of(managed.TurnEnded)
    assert (turn.turn, turn.role) == (1, "assistant")
    assert "agent heard nothing for 0.2 s; moving on" in agent.lines


# ---- DTMF and tools ------------------------------------------------------------------------


async def test_collected_digits_fill_the_tool_call_and_results_are_recorded() -> None:
    """Keyed digits become {pin}; each result is recorded; the next turn lists the tool calls."""
    steps = [
        {"collect_dtmf": {"digits": 4, "into": "pin", "timeout": 5}},
        {"tool": {"name": "verify_caller", "arguments": {"pin": "{pin}"}, "into": "verify"}},
        {"tool": {"name": "get_account_balance", "into": "balance"}},
        {"say": "short"},
    ]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        for digit in "1234":
            await client.send(managed.dtmf_input(digit))
        await client.wait_for(lambda events: bool(client.of(managed.ClientToolCall)))
        verify = client.of(managed.ClientToolCall)[0]
        assert (verify.tool_name, dict(verify.parameters)) == ("verify_caller", {"pin": "1234"})
        assert verify.expects_response
        assert re.fullmatch(r"call_[0-9a-f]{12}", verify.tool_call_id)
        await client.send(managed.client_tool_result(verify.tool_call_id, "ok", is_error=False))
        await client.wait_for(lambda events: len(client.of(managed.ClientToolCall)) == 2)
        balance = client.of(managed.ClientToolCall)[1]
        assert (balance.tool_name, dict(balance.parameters)) == ("get_account_balance", {})
        await client.send(
            managed.client_tool_result(
                balance.tool_call_id, "bank down", is_error=True, error_type="upstream"
            )
        )
        await client.wait_for(lambda events: bool(client.of(managed.TurnEnded)))
    session = agent.session
    assert session.dtmf_digits == ["1", "2", "3", "4"]
    assert session.variables == {"pin": "1234", "verify": "ok", "balance": "bank down"}
    assert session.tool_results[verify.tool_call_id].result == "ok"
    assert session.tool_results[balance.tool_call_id].is_error
    assert [call.name for call in session.tool_calls] == ["verify_caller", "get_account_balance"]
    [turn] = client.of(managed.TurnEnded)
    assert [(call["name"], call["result"]) for call in turn.tool_calls] == [
        ("verify_caller", "ok"),
        ("get_account_balance", "bank down"),
    ]
    assert "agent calls verify_caller" in agent.lines
    assert "get_account_balance failed: bank down" in agent.lines
    assert not client.of(managed.Error)


async def test_tool_timeout_then_a_late_result_is_silently_ignored() -> None:
    """No result in time: the script goes on; the late result gets no error."""
    steps = [
        {"tool": {"name": "freeze_card", "arguments": {"last4": "2207"}, "timeout": 0.2}},
        {"say": "short"},
    ]
    async with running(steps) as agent, connect(agent) as client:
        await client.start()
        await client.wait_for(lambda events: bool(client.of(managed.TurnEnded)))
        [call] = client.of(managed.ClientToolCall)
        await client.send(managed.client_tool_result(call.tool_call_id, "late", is_error=False))
        # A refused event after it: errors come in order, so none came for the late result.
        await client.send('{"type":"dtmf_input","digit":"x"}')
        await client.wait_for(lambda events: bool(client.of(managed.Error)))
    [error] = client.of(managed.Error)
    assert "digit" in error.message
    assert "freeze_card timed out after 0.2 s" in agent.lines
    assert agent.session.tool_results == {}


async def test_bad_events_after_start_are_refused_and_junk_is_fatal() -> None:
    """A bad digit or an unknown tool id: non-fatal error; then malformed JSON: fatal, 1008."""
    async with running([{"pause": 0}]) as agent:
        async with connect(agent) as client:
            await client.start()
            await client.send('{"type":"dtmf_input","digit":"x"}')
            await client.send(managed.client_tool_result("call_000000000000", "?", is_error=False))
            await client.send('{"type":"audio_input","audio":"***"}')
            await client.wait_for(lambda events: len(client.of(managed.Error)) == 3)
            assert [error.fatal for error in client.of(managed.Error)] == [False] * 3
            await client.send('{"type":"dtmf_input",')
            close = await client.wait_closed()
        assert close.code == 1008
        errors = client.of(managed.Error)
        assert [(error.code, error.fatal) for error in errors] == [
            ("invalid_event", False),
            ("invalid_event", False),
            ("invalid_event", False),
            ("invalid_event", True),
        ]
        assert "digit" in errors[0].message
        assert "call_000000000000" in errors[1].message
        session = await agent.ended()
        assert session.errors_sent == [SentError(e.code, e.message, e.fatal) for e in errors]
        assert session.dtmf_digits == []


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("caller is done", "call ended by agent, reason: caller is done"),
        (None, "call ended by agent"),
    ],
)
async def test_hang_up_closes_1000_with_the_reason(reason: str | None, expected: str) -> None:
    """dtmf presses keys; hang_up closes 1000 'call ended by agent' with no final turn_ended."""
    steps = [{"dtmf": "12#"}, {"hang_up": {"reason": reason} if reason else {}}]
    async with running(steps) as agent:
        async with connect(agent) as client:
            await client.start()
            close = await client.wait_closed()
        assert (close.code, close.reason) == (1000, expected)
        assert [event.digit for event in client.of(managed.DtmfOutput)] == ["1", "2", "#"]
        session = await agent.ended()
        assert (session.ended_by, session.close_code, session.close_reason) == (
            "agent",
            1000,
            expected,
        )
        assert any(line.startswith("agent hangs up") for line in agent.lines)


async def test_as_available_sends_audio_at_once_and_still_ends_on_time() -> None:
    """as_available: every chunk arrives at once; the turn still lasts the clip's length."""
    async with running([{"say": "second"}]) as agent, connect(agent) as client:
        await client.send(
            managed.session_create(
                input_format="mulaw_8000", dynamic_variables={}, output_delivery="as_available"
            )
        )
        await client.wait_for(lambda events: bool(client.of(managed.TurnEnded)))
    assert len(client.of(managed.AudioOutput)) == 50
    assert client.audio_times[-1] - client.audio_times[0] < 0.5
    [ended] = client.of(managed.TurnEnded)
    assert ended.end_time - ended.start_time == pytest.approx(1.0, abs=0.3)
    assert agent.session.output_delivery == "as_available"


@pytest.mark.parametrize(
    ("fmt", "size"),
    [("mulaw_8000", 160), ("pcm_16000", 640), ("pcm_24000", 960), ("pcm_44100", 1764)],
)
async def test_each_format_gets_20ms_chunks(fmt: str, size: int) -> None:
    """A 0.2 s clip is ten 20 ms chunks in the session's format, resampled loud speech for PCM."""
    async with running([{"say": "short"}]) as agent, connect(agent) as client:
        await client.start(fmt)
        await client.wait_for(lambda events: bool(client.of(managed.TurnEnded)))
    chunks = [decoded(event) for event in client.of(managed.AudioOutput)]
    assert [len(chunk) for chunk in chunks] == [size] * 10
    if fmt != "mulaw_8000":
        samples = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64)
        rms = math.sqrt(float(np.mean(samples[len(samples) // 4 : -len(samples) // 4] ** 2)))
        assert 20 * math.log10(rms / 32768) == pytest.approx(-13.0, abs=1.5)
    assert agent.session.output_delivery == "speaking_pace"


# ---- scripts -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bank_demo", "bank_demo_transfer"])
def test_shipped_scripts_load_with_their_clips(name: str) -> None:
    """Both shipped scripts load, speak only recorded clips, and make an emulator."""
    script = load_agent_script(name)
    assert script.steps[0] == Say("agent_greeting", interruptible=False)
    assert script.clip_names() <= clips.CLIP_NAMES
    tools = [step.name for step in script.steps if isinstance(step, CallTool)]
    last = "end_call" if name == "bank_demo" else "transfer_to_human"
    assert tools[:2] == ["collect_pin", "get_account_balance"]  # the PIN by keypad (issue 21)
    assert tools[-1] == last
    assert Say("agent_balance", interruptible=True) in script.steps
    [collect] = [s for s in script.steps if isinstance(s, CallTool) and s.name == "collect_pin"]
    assert (collect.arguments, collect.lead_in) == ({}, "agent_pin_prompt")
    emulator = CartesiaEmulator(api_key=API_KEY, script=script)
    assert emulator.clip("agent_greeting").text == clips.clip_text("agent_greeting")


def test_script_loads_from_a_path(tmp_path: Path) -> None:
    """A path loads the file; its stem is the script's name."""
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"steps": [{"pause": 0.5}, {"hang_up": {}}]}))
    script = load_agent_script(str(path))
    assert script.name == "mine"
    assert len(script.steps) == 2


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "JSON object"),
        ({"steps": []}, "non-empty list"),
        ({"steps": [{"sing": "x"}]}, "step 1: needs exactly one of"),
        ({"steps": [{"say": "a", "listen": {}}]}, "found say, listen"),
        ({"steps": [{"say": "a", "loud": True}]}, "unknown key 'loud'"),
        ({"steps": [{"listen": {"transcript": "x", "timeout": True}}]}, "'timeout'"),
        ({"steps": [{"collect_dtmf": {"digits": 0, "into": "pin"}}]}, "'digits'"),
        ({"steps": [{"dtmf": "5a"}]}, "0-9, * and #"),
        ({"steps": [{"tool": {"name": "t", "arguments": {"pin": "{pin}"}}}]}, "{pin} names no"),
        ({"steps": [{"pause": 0}, {"pause": -1}]}, "step 2 (pause)"),
        ({"steps": [{"hang_up": {"why": "x"}}]}, "unknown key 'why'"),
    ],
)
def test_invalid_scripts_are_refused_clearly(data: object, problem: str) -> None:
    """Each script mistake raises AgentScriptError naming the step and the problem."""
    with pytest.raises(AgentScriptError, match=re.escape(problem)):
        parse_agent_script(data, name="bad")


def test_unknown_script_name_and_clip_are_refused() -> None:
    """An unknown shipped name lists the real ones; an unknown clip fails at construction."""
    with pytest.raises(AgentScriptError, match="bank_demo"):
        load_agent_script("no_such_script")
    script = parse_agent_script({"steps": [{"say": "agent_mumble"}]}, name="bad")
    with pytest.raises(AgentScriptError, match="agent_mumble"):
        CartesiaEmulator(api_key=API_KEY, script=script)


async def test_fail_mid_turn_closes_1011_halfway_then_the_next_session_is_whole() -> None:
    """Issue 16's fault: the first session closes 1011 in the middle of its first turn."""
    async with running([{"say": "second"}], fail_mid_turn=1) as agent:
        async with connect(agent) as client:
            await client.start()
            with trio.fail_after(STEP_TIMEOUT):
                close = await client.wait_closed()
            assert close.code == 1011
            assert 0 < len(client.of(managed.AudioOutput)) < 50
            assert client.of(managed.TurnEnded) == []
        async with connect(agent) as client:
            await client.start()
            await client.wait_for(lambda events: bool(client.of(managed.TurnEnded)))
            assert len(client.of(managed.AudioOutput)) == 50
    assert "agent fails mid-turn (closes 1011)" in agent.lines


async def test_sessions_beyond_accept_sessions_are_refused_with_503() -> None:
    async with running([{"say": "short"}], accept_sessions=1) as agent:
        async with connect(agent) as client:
            await client.start()
        headers = [(b"X-API-Key", API_KEY.encode())]
        assert await rejected_status(agent.url + PATH, headers) == 503
    assert len(agent.emulator.sessions) == 1
