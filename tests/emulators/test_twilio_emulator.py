"""The Twilio emulator against the real Archer (in-process, loopback) and a scripted agent.

Archer runs as in the end-to-end tests (``running_system``: real hypercorn, real WebSockets, an
SQLite database); the agent is ``AgentServer``; the caller is ``EmulatedCaller``. Real clock and
real sockets, so every wait is bounded. Scripts are built here and say synthetic clips, so the
tests do not depend on the recorded speech.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request, websocket
from quart_trio import QuartTrio
from twilio.twiml.voice_response import VoiceResponse

from archer.audio.clips import CLIP_NAMES
from archer.call.tools import Tool, ToolContext, ToolRegistry, ToolResult
from archer.cartesia import managed
from archer.db.store import StoredCall
from archer.emulators.twilio.caller import EmulatedCaller
from archer.emulators.twilio.outcome import CallOutcome
from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from archer.emulators.twilio.script import (
    CallerScript,
    HangUp,
    Pause,
    Press,
    Say,
    ScriptError,
    WaitForAgent,
    WaitForAgentSpeech,
    WaitForHangup,
    load_caller_script,
    parse_caller_script,
    shipped_scripts,
)
from archer.twilio.rest import TwilioRestControl
from archer.twilio.signature import SignatureChecker, webhook_url
from tests.contract.schemas import validate_twilio_inbound
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.test_call import AUTH_TOKEN, PUBLIC_BASE_URL, System, running_system
from tests.helpers import audio, live_archer_tasks

ACCOUNT_SID = "AC" + "e2e2" * 8
SILENCE = 0xFF
#: A whole call here is a few seconds; anything near this is a hang.
CALL_TIMEOUT = 20.0
#: The synthetic clip the caller says: three distinct 20 ms frames.
CLIP = bytes([0x21]) * 160 + bytes([0x22]) * 160 + bytes([0x23]) * 160


async def _wait_heard(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    # Places a mark behind the queued agent audio and waits for Twilio to echo it.
    return ToolResult({"heard": await context.control.wait_until_heard()})


TOOLS = ToolRegistry.of(Tool("wait_heard", _wait_heard))


def _caller(
    system: System,
    script: CallerScript,
    *,
    auth_token: str = AUTH_TOKEN,
    rest: TwilioRestState | None = None,
    on_send: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EmulatedCaller:
    """A caller of Archer in ``system`` saying the synthetic clip ``hello``."""
    return EmulatedCaller(
        archer_url=system.caller.archer_url,
        public_base_url=PUBLIC_BASE_URL,
        account_sid=ACCOUNT_SID,
        auth_token=auth_token,
        script=script,
        clips={"hello": CLIP}.__getitem__,
        rest=rest,
        on_send=on_send,
        progress=progress,
    )


async def _wait_for_record(system: System, call_sid: str) -> StoredCall:
    """The call as stored once it is flushed, has Twilio's status, and no call task is left."""
    with trio.fail_after(STEP_TIMEOUT):
        while True:
            stored = await system.store.load_call(call_sid)
            if (
                stored is not None
                and stored.record.end_reason is not None
                and stored.twilio_status is not None
                and not live_archer_tasks()
            ):
                return stored
            await trio.sleep(0.05)


async def _place(caller: EmulatedCaller) -> CallOutcome:
    with trio.fail_after(CALL_TIMEOUT):
        return await caller.run()


def _count(kind: type[object], events: list[managed.ClientEvent]) -> int:
    return sum(isinstance(event, kind) for event in events)


async def banking_agent(peer: AgentPeer) -> None:
    """Greet, answer the caller's clip at length, be cut off, take digits, run a marked tool."""
    await peer.accept_session()
    await peer.send(managed.turn_started(1, "assistant", 0.1))
    for _ in range(10):
        await peer.send(managed.audio_output(audio(0x30)))
    await peer.send(
        managed.turn_ended(1, "assistant", "Hello.", interrupted=False, start_time=0.1, end_time=1)
    )
    await peer.wait_for(
        lambda events: any(
            isinstance(e, managed.AudioInput) and e.audio == audio(0x23) for e in events
        )
    )
    # One second of answer, cut off after 0.3 s by the agent's own clear, then a short reply.
    for _ in range(50):
        await peer.send(managed.audio_output(audio(0x40)))
    await trio.sleep(0.3)
    await peer.send(managed.audio_output_clear())
    await peer.send(managed.turn_started(2, "assistant", 1.0))  # the answer after the barge-in
    for _ in range(5):
        await peer.send(managed.audio_output(audio(0x50)))
    await peer.wait_for(lambda events: _count(managed.DtmfInput, events) >= 2)
    for _ in range(10):
        await peer.send(managed.audio_output(audio(0x60)))
    await peer.send(managed.client_tool_call("call_heard", "wait_heard", {}, expects_response=True))
    await peer.wait_for(lambda events: _count(managed.ClientToolResult, events) >= 1)


async def test_a_whole_call_is_emulated_as_twilio_carries_it(sqlite_url: str) -> None:
    """Signed webhook and stream, caller audio, DTMF, playout with clear and marks, callback."""
    script = CallerScript(
        (
            WaitForAgent(quiet_ms=300, timeout=10),
            Say("hello"),
            WaitForAgentSpeech(timeout=10),
            WaitForAgent(quiet_ms=300, timeout=10),
            Press("12", gap_ms=50),
            WaitForAgent(quiet_ms=300, timeout=10),
            Pause(1.0),  # the tool's mark echo and its settle time
            HangUp(),
        )
    )
    sent: list[str] = []
    lines: list[str] = []
    async with running_system(sqlite_url, banking_agent, tools=TOOLS) as system:
        caller = _caller(system, script, on_send=sent.append, progress=lines.append)
        outcome = await _place(caller)
        stored = await _wait_for_record(system, caller.call_sid)
        peer = await system.peer()

    assert (outcome.ended_by, outcome.invalid, outcome.steps_done) == ("caller", [], 8)
    assert outcome.status_callback_status == 200
    assert "<Connect><Stream" in outcome.twiml
    assert outcome.stream_sid is not None
    assert outcome.stream_sid.startswith("MZ")
    assert len(outcome.stream_sid) == 34
    # Everything the caller sent is Twilio's published shape, in Twilio's order.
    for message in sent:
        validate_twilio_inbound(message)
    frames = [json.loads(message) for message in sent]
    assert [f["event"] for f in frames[:3]] == ["connected", "start", "media"]
    assert frames[-1]["event"] == "stop"
    assert [int(f["sequenceNumber"]) for f in frames[1:]] == list(range(1, len(frames)))
    media = [f["media"] for f in frames if f["event"] == "media"]
    assert [int(m["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert [int(m["timestamp"]) for m in media] == [100 + 20 * i for i in range(len(media))]
    assert frames[1]["start"]["customParameters"]["call_sid"] == caller.call_sid
    # The agent got the clip unchanged, in order, and the digits.
    inputs = [e.audio for e in peer.of(managed.AudioInput)]
    at = inputs.index(audio(0x21))
    assert inputs[at : at + 4] == [audio(0x21), audio(0x22), audio(0x23), audio(SILENCE)]
    assert [e.digit for e in peer.of(managed.DtmfInput)] == ["1", "2"]
    assert outcome.dtmf_sent == "12"
    # What the caller heard: greeting, part of the cut-off answer, the reply, the tool's lead-in.
    heard = outcome.heard
    assert len(heard) % 160 == 0
    assert heard.count(0x30) == 1600
    assert 0 < heard.count(0x40) < 50 * 160
    assert heard.count(0x50) == 800
    assert heard.count(0x60) == 1600
    assert heard.index(0x30) < heard.index(0x40) < heard.index(0x50) < heard.index(0x60)
    assert heard[heard.index(0x50) : heard.index(0x50) + 800] == bytes([0x50]) * 800
    assert heard.endswith(bytes([SILENCE]) * 1600)  # the pause after the last agent audio
    assert outcome.clears_received == 1
    # The tool's mark came back once its audio had played: the tool heard "heard".
    assert outcome.marks_echoed
    assert all(name.startswith("archer-") for name in outcome.marks_echoed)
    [result] = peer.of(managed.ClientToolResult)
    assert json.loads(result.result) == {"heard": True}
    # The record: a completed call, Twilio's status and duration from the callback.
    record = stored.record
    assert (record.status, record.end_reason) == ("completed", "caller_hangup")
    assert record.stream_sid == outcome.stream_sid
    assert record.frames_out == outcome.media_frames_received
    assert record.frames_in == len(media)
    assert (stored.twilio_status, stored.twilio_duration_s) == (
        "completed",
        round(outcome.duration_s),
    )
    assert "caller says: hello" in lines
    assert "caller presses 12" in lines
    assert "caller hears agent audio" in lines
    assert lines[-1] == "caller hangs up"


async def test_archer_hanging_up_ends_the_call(sqlite_url: str) -> None:
    """The agent closing 1000 makes Archer close the stream: ended by Archer, callback posted."""

    async def say_goodbye(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.audio_output(audio(0x30)))
        await trio.sleep(0.2)
        await peer.websocket.aclose(1000, "call ended by agent")

    lines: list[str] = []
    script = CallerScript((WaitForHangup(timeout=10),))
    async with running_system(sqlite_url, say_goodbye, tools=TOOLS) as system:
        outcome = await _place(_caller(system, script, progress=lines.append))
        stored = await _wait_for_record(system, outcome.call_sid)

    assert (outcome.ended_by, outcome.steps_done, outcome.invalid) == ("archer", 1, [])
    assert outcome.detail == "Archer closed the stream; the TwiML goes on to: Hangup"
    assert outcome.heard.count(0x30) == 160
    assert "Archer hung up" in lines
    assert (stored.record.status, stored.record.end_reason) == ("completed", "agent_hangup")
    assert stored.twilio_status == "completed"


async def test_a_rest_transfer_stops_the_stream(sqlite_url: str) -> None:
    """A ``<Dial>`` update over REST ends the stream with ``stop``, like Twilio; the number kept."""
    rest = TwilioRestState(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    sent: list[str] = []
    script = CallerScript((WaitForHangup(timeout=10),))
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(serve_twilio_rest, rest)
        async with running_system(
            sqlite_url, _listen, tools=TOOLS, twilio_api_base_url=rest_url
        ) as system:
            caller = _caller(system, script, rest=rest, on_send=sent.append)
            control = TwilioRestControl(
                account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_base_url=rest_url
            )
            try:
                async with trio.open_nursery() as call:
                    outcomes: list[CallOutcome] = []

                    async def place() -> None:
                        outcomes.append(await _place(caller))

                    call.start_soon(place)
                    await system.peer()
                    await control.transfer(caller.call_sid, "+15555550199")
            finally:
                control.close()
            stored = await _wait_for_record(system, caller.call_sid)
        nursery.cancel_scope.cancel()

    [outcome] = outcomes
    assert (outcome.ended_by, outcome.transferred_to) == ("twilio_rest", "+15555550199")
    assert (outcome.steps_done, outcome.invalid) == (1, [])
    assert outcome.detail == "transferred to +15555550199"
    assert json.loads(sent[-1])["event"] == "stop"
    assert [update.call_sid for update in rest.updates] == [caller.call_sid]
    assert rest.calls[caller.call_sid].status == "completed"
    assert stored.record.status == "completed"
    assert stored.twilio_status == "completed"


async def test_a_wrong_auth_token_is_rejected(sqlite_url: str) -> None:
    """Signed with the wrong token, the webhook is refused and no stream is ever opened."""
    script = CallerScript((HangUp(),))
    async with running_system(sqlite_url, _listen, tools=TOOLS) as system:
        outcome = await _place(_caller(system, script, auth_token="not-the-token"))
        assert system.agent.peers == []
        assert await system.store.load_call(outcome.call_sid) is None

    assert (outcome.ended_by, outcome.stream_sid) == ("rejected", None)
    assert outcome.detail == "11200: the voice webhook answered HTTP 403"
    assert outcome.status_callback_status == 403
    assert (outcome.heard, outcome.steps_done) == (b"", 0)


async def test_a_step_that_times_out_hangs_up(sqlite_url: str) -> None:
    """An agent that never speaks: the waiting step times out and the caller hangs up."""
    script = CallerScript((WaitForAgentSpeech(timeout=0.3), Say("hello")))
    async with running_system(sqlite_url, _listen, tools=TOOLS) as system:
        outcome = await _place(_caller(system, script))

    assert (outcome.ended_by, outcome.steps_done) == ("caller", 0)
    assert outcome.detail == "step 1 (wait_for_agent_speech) timed out after 0.3 s"
    assert set(outcome.heard) == {SILENCE}
    assert len(outcome.heard) >= 8 * 300


async def _listen(peer: AgentPeer) -> None:
    await peer.accept_session()


# --- against a stand-in Archer: what the real one never does ---------------------------------


@attrs.define
class FakeArcher:
    """Answers the webhook with fixed TwiML; its stream sends ``messages(stream_sid)`` and hangs up.

    Records what Twilio's requests looked like, with each signature checked as Archer checks it.
    """

    twiml: str
    messages: Callable[[str], list[str | bytes]] = lambda sid: []
    webhooks: list[tuple[str, dict[str, str], bool]] = attrs.Factory(list)
    upgrades: list[tuple[str, str, bool]] = attrs.Factory(list)

    def app(self) -> QuartTrio:
        app = QuartTrio("fake-archer")
        signatures = SignatureChecker(AUTH_TOKEN)

        @app.post("/twilio/voice")
        @app.post("/twilio/status")
        async def form() -> Response:
            fields = dict((await request.form).items())
            signed = signatures.valid_webhook(
                webhook_url(PUBLIC_BASE_URL, request.path),
                fields,
                request.headers.get("X-Twilio-Signature"),
            )
            self.webhooks.append((request.path, fields, signed))
            body = self.twiml if request.path == "/twilio/voice" else "<Response/>"
            return Response(body, content_type="text/xml")

        @app.websocket("/ws/refuse")
        async def refuse() -> tuple[str, int]:
            return "forbidden", 403

        @app.websocket("/ws/stream")
        async def stream() -> None:
            self.upgrades.append(
                (
                    websocket.path,
                    websocket.query_string.decode(),
                    signatures.valid_stream_upgrade(
                        f"wss://archer.test{websocket.path}",
                        websocket.headers.get("X-Twilio-Signature"),
                    ),
                )
            )
            await websocket.accept()
            frame: dict[str, Any] = {}
            while frame.get("event") != "start":
                frame = json.loads(await websocket.receive())
            for message in self.messages(frame["streamSid"]):
                await websocket.send(message)
            while frame.get("event") != "mark":  # the echo of the last message's mark
                frame = json.loads(await websocket.receive())

        return app


@asynccontextmanager
async def serving(fake: FakeArcher) -> AsyncIterator[str]:
    """``fake`` on 127.0.0.1; yields its base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn_serve, fake.app(), config, shutdown_trigger=trio.sleep_forever)
        )
        yield binds[0]
        nursery.cancel_scope.cancel()


def _fake_caller(url: str, script: CallerScript) -> EmulatedCaller:
    return EmulatedCaller(
        archer_url=url,
        public_base_url=PUBLIC_BASE_URL,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        script=script,
        clips={"hello": CLIP}.__getitem__,
    )


def _stream_twiml(path: str) -> str:
    response = VoiceResponse()
    response.connect().stream(url=f"wss://archer.test{path}?token=dropped").parameter(
        name="token", value="t0k"
    )
    response.hangup()
    return str(response.to_xml())


async def test_bad_messages_are_noted_once_and_the_call_goes_on() -> None:
    """Each distinct 31951 problem is recorded once; good messages around them still work."""

    def messages(sid: str) -> list[str | bytes]:
        clear_extra = json.dumps({"event": "clear", "streamSid": sid, "extra": 1})
        return [
            json.dumps({"event": "media", "streamSid": sid, "media": {"payload": audio(0x70)}}),
            clear_extra,
            clear_extra,
            json.dumps({"event": "clear", "streamSid": "MZ" + "0" * 32}),
            b"\x00\x01",
            json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "end"}}),
        ]

    fake = FakeArcher(_stream_twiml("/ws/stream"), messages)
    async with serving(fake) as url:
        caller = _fake_caller(url, CallerScript((WaitForHangup(timeout=5),)))
        outcome = await _place(caller)

    assert outcome.invalid == [
        "31951: clear: undeclared extra",
        f"31951: clear: streamSid 'MZ{'0' * 32}' is another stream's",
        "31951: a binary frame: Twilio reads JSON text frames only",
    ]
    assert (outcome.media_frames_received, outcome.clears_received) == (1, 0)
    assert outcome.marks_echoed == ["end"]
    assert outcome.heard.count(0x70) == 160
    assert (outcome.ended_by, outcome.steps_done) == ("archer", 1)
    # The query string was dropped before dialling and the signature covers the URL without it.
    assert fake.upgrades == [("/ws/stream", "", True)]
    [(path, fields, signed)] = fake.webhooks[:1]
    assert (path, signed) == ("/twilio/voice", True)
    assert fields == caller.webhook_fields()


async def test_a_refused_stream_upgrade_ends_the_call() -> None:
    """A non-101 answer to the upgrade is Twilio's 31920: no stream, the call ends."""
    async with serving(FakeArcher(_stream_twiml("/ws/refuse"))) as url:
        outcome = await _place(_fake_caller(url, CallerScript((HangUp(),))))
    assert (outcome.ended_by, outcome.stream_sid) == ("rejected", None)
    assert outcome.detail == "31920: the stream upgrade was refused with HTTP 403"


async def test_twiml_without_a_stream_ends_the_call_and_reports_it() -> None:
    """An apology instead of a stream: ``no_stream``, what was said, and the status callback."""
    response = VoiceResponse()
    response.say("Sorry, we are closed.")
    response.hangup()
    fake = FakeArcher(str(response.to_xml()))
    async with serving(fake) as url:
        outcome = await _place(_fake_caller(url, CallerScript((HangUp(),))))

    assert (outcome.ended_by, outcome.stream_sid, outcome.steps_done) == ("no_stream", None, 0)
    assert (
        outcome.detail == 'no <Connect><Stream> in the TwiML: Say "Sorry, we are closed.", Hangup'
    )
    assert outcome.status_callback_status == 200
    [_, (path, fields, signed)] = fake.webhooks
    assert (path, signed) == ("/twilio/status", True)
    assert fields["CallStatus"] == "completed"
    assert fields["CallDuration"] == "0"
    assert (fields["CallbackSource"], fields["SequenceNumber"]) == ("call-progress-events", "0")
    assert parsedate_to_datetime(fields["Timestamp"]).utcoffset() == timedelta(0)
    assert fields["CallSid"] == outcome.call_sid


# --- scripts -----------------------------------------------------------------------------------


def test_the_shipped_demo_scripts_load() -> None:
    """Both demo scripts are shipped, parse, and say only clips that exist."""
    assert {"caller_demo", "caller_demo_transfer"} <= set(shipped_scripts())
    demo = load_caller_script("caller_demo")
    assert demo.steps == (
        WaitForAgent(800, 30),
        Say("caller_balance"),
        WaitForAgentSpeech(30),  # the PIN prompt, spoken while collect_pin already runs
        Pause(1.0),
        Press("1234#", 300),  # keyed during the prompt (issue 21)
        Pause(2.5),
        WaitForAgentSpeech(30),
        Pause(2.5),
        Say("caller_freeze"),
        WaitForAgent(800, 30),
        Say("caller_thanks"),
        WaitForHangup(30),
    )
    transfer = load_caller_script("caller_demo_transfer")
    assert transfer.steps[:8] == demo.steps[:8]
    assert transfer.steps[8:] == (Say("caller_human"), WaitForHangup(30))
    assert set(demo.clips + transfer.clips) <= CLIP_NAMES


def test_a_script_file_loads_by_path(tmp_path: Path) -> None:
    """A path ending in .json is read as a script file, defaults filled in."""
    path = tmp_path / "mine.json"
    path.write_text('[{"wait_for_agent": {}}, {"pause": 0}, {"hang_up": {}}]')
    script = load_caller_script(str(path))
    assert script.name == "mine"
    assert script.steps == (WaitForAgent(800, 30.0), Pause(0.0), HangUp())


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ([], "non-empty list"),
        ({"steps": [{"say": "x"}], "extra": 1}, "unknown key extra"),
        (["say"], "step 1: must be an object"),
        ([{"say": "x", "press": "1"}], "exactly one of"),
        ([{"shout": "x"}], "exactly one of"),
        ([{"say": ""}], r"step 1 \(say\): must name a clip"),
        ([{"press": "12a"}], "digits must be"),
        ([{"press": "1", "gap_ms": -1}], "gap_ms must be a whole number"),
        ([{"pause": "1"}], "pause must be a number"),
        ([{"pause": -1}], "pause must be ≥ 0"),
        ([{"wait_for_agent": {"timeout": 0}}], "timeout must be > 0"),
        ([{"wait_for_agent": {"quiet": 1}}], "unknown key quiet"),
        ([{"hang_up": {"now": True}}], "unknown key now"),
        ([{"wait_for_hangup": 30}], "must be an object"),
    ],
)
def test_bad_scripts_are_refused(data: object, complaint: str) -> None:
    """Each malformed script raises ``ScriptError`` naming the step and the problem."""
    with pytest.raises(ScriptError, match=complaint):
        parse_caller_script(data)


def test_an_unknown_script_name_lists_the_shipped_ones() -> None:
    """A name that is not shipped says which are."""
    with pytest.raises(ScriptError, match="caller_demo"):
        load_caller_script("no_such_script")
