"""The Twilio emulator: one scripted caller phoning Archer, carried the way Twilio carries it.

Layer: emulator (trio I/O against an Archer at a plain ``http://`` address, usually loopback).
Product code: ``archer demo``, ``archer emulate call`` and the end-to-end tests use it. It
leans on the pure models ``archer.twilio.frames.parse_outbound`` (what Twilio would flag) and
``archer.emulators.playout.PlayoutBuffer`` (what the caller hears), and on the REST emulator's
``TwilioRestState`` when Archer is to end or transfer calls over REST.

What one ``EmulatedCaller.run()`` does (../shared/reference/twilio-media-streams.md §1, §3.5):

1. Posts the voice webhook with Twilio's parameters, signed over ``public_base_url`` +
   ``/twilio/voice``. Anything but HTTP 200 XML TwiML with ``<Connect><Stream>`` ends the call
   there (``rejected`` or ``no_stream``, the reason in ``detail``).
2. Dials the TwiML's ``wss://`` URL (query string dropped, as Twilio does) at the same path on
   ``archer_url`` over plain ``ws://``, signing the ``wss://`` URL with no parameters.
3. Sends ``connected`` and ``start``, then one 20 ms ``media`` frame per tick on an absolute
   schedule (a late tick is caught up, never shifted): the script's audio while it is saying
   something, μ-law silence otherwise. The same tick drains the playout buffer, so ``heard``
   is the caller's real-time timeline, and echoes marks as the drain passes them.
4. Checks every message Archer sends as Twilio does; a bad one is noted once in ``invalid``
   (warning 31951) and ignored, and the call goes on.
5. Ends when the script does (the caller sends ``stop`` and closes), when Archer closes the
   socket, or when Archer updates the call over REST (Twilio abandons the stream: ``stop``,
   close). Then it posts the signed status callback to ``/twilio/status``.

Caller scripts are JSON data (shipped ones in ``archer/emulators/scripts``), one step per
object, e.g. ``{"say": "caller_balance"}``; ``parse_caller_script`` documents the steps. The
speech comes from a clip source: ``archer.audio.clips.speech_clip`` unless one is given.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from archer.audio.clips import CLIP_NAMES, clip_text, speech_clip
from archer.audio.g711 import SILENCE
from archer.emulators.http import HttpResponse, post_form
from archer.emulators.playout import BYTES_PER_MS, PlayoutBuffer
from archer.emulators.twilio_rest import TwilioRestState
from archer.errors import TwilioProtocolError
from archer.twilio.frames import (
    DTMF_DIGITS,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    parse_outbound,
)
from archer.twilio.signature import SignatureChecker, webhook_url
from archer.websocket_client import open_websocket_client

__all__ = [
    "CallOutcome",
    "CallerScript",
    "ClipSource",
    "EmulatedCaller",
    "EndedBy",
    "HangUp",
    "Pause",
    "Press",
    "Say",
    "ScriptError",
    "ScriptStep",
    "WaitForAgent",
    "WaitForAgentSpeech",
    "WaitForHangup",
    "load_caller_script",
    "new_call_sid",
    "parse_caller_script",
    "shipped_scripts",
]

VOICE_PATH: Final = "/twilio/voice"
STATUS_PATH: Final = "/twilio/status"
API_VERSION: Final = "2010-04-01"
#: Twilio's cadence: one 160-byte μ-law frame every 20 ms.
FRAME_MS: Final = 20
FRAME_BYTES: Final = BYTES_PER_MS * FRAME_MS
#: Real captures show the first media frame already ~100 ms into the stream (reference §3.2).
FIRST_TIMESTAMP_MS: Final = 100
#: Archer may send its audio in large chunks; Twilio takes "any size" (reference §3.4).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
#: A ``<Parameter>``'s name and value together must be shorter than this.
MAX_PARAMETER_CHARS: Final = 500
#: Agent audio after at least this much quiet is announced again as "caller hears agent audio".
_ANNOUNCE_AFTER_QUIET_MS: Final = 500
_SILENT_FRAME: Final = bytes([SILENCE]) * FRAME_BYTES
_SCRIPTS_PACKAGE: Final = "archer.emulators"
_SCRIPTS_DIR: Final = "scripts"

_E = TypeVar("_E", bound=BaseException)

EndedBy = Literal["caller", "archer", "twilio_rest", "rejected", "no_stream"]
#: Gives the 8 kHz μ-law audio of a named speech clip.
ClipSource = Callable[[str], bytes]


def new_call_sid() -> str:
    """A fresh call SID: ``CA`` and 32 hex digits, as Twilio's."""
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    """A fresh stream SID: ``MZ`` and 32 hex digits, as Twilio's."""
    return "MZ" + secrets.token_hex(16)


# --- caller scripts ----------------------------------------------------------------------------


class ScriptError(ValueError):
    """A caller script is not valid; the message names the step and what is wrong."""


@attrs.frozen
class WaitForAgent:
    """Until agent audio has played (since this step began) and then ``quiet_ms`` of quiet."""

    quiet_ms: int = 800
    timeout: float = 30.0


@attrs.frozen
class WaitForAgentSpeech:
    """Until agent audio plays (since this step began)."""

    timeout: float = 30.0


@attrs.frozen
class Pause:
    """The caller stays quiet (silence is still streamed) for ``seconds``."""

    seconds: float


@attrs.frozen
class Say:
    """Stream the speech clip ``clip`` in real time, 20 ms frames."""

    clip: str


@attrs.frozen
class Press:
    """Key in ``digits`` (``dtmf`` events), ``gap_ms`` apart."""

    digits: str
    gap_ms: int = 300


@attrs.frozen
class HangUp:
    """The caller hangs up: ``stop``, then the socket closes."""


@attrs.frozen
class WaitForHangup:
    """Until Archer closes the stream or ends the call over REST."""

    timeout: float = 30.0


ScriptStep = WaitForAgent | WaitForAgentSpeech | Pause | Say | Press | HangUp | WaitForHangup

#: Each step's JSON key.
_KIND_OF: Final[Mapping[type[ScriptStep], str]] = {
    WaitForAgent: "wait_for_agent",
    WaitForAgentSpeech: "wait_for_agent_speech",
    Pause: "pause",
    Say: "say",
    Press: "press",
    HangUp: "hang_up",
    WaitForHangup: "wait_for_hangup",
}
_STEP_KINDS: Final = tuple(_KIND_OF.values())


@attrs.frozen
class CallerScript:
    """What the caller does, step by step."""

    steps: tuple[ScriptStep, ...]
    name: str = "script"
    description: str = ""

    @property
    def clips(self) -> tuple[str, ...]:
        """Every clip the script says, once each, in order of first use."""
        return tuple(dict.fromkeys(step.clip for step in self.steps if isinstance(step, Say)))


def parse_caller_script(data: object, *, name: str = "script") -> CallerScript:
    """A ``CallerScript`` from JSON data: ``{"description": ..., "steps": [...]}`` or a list.

    Each step is an object with exactly one of these keys:

    - ``{"wait_for_agent": {"quiet_ms": 800, "timeout": 30}}`` (both optional)
    - ``{"wait_for_agent_speech": {"timeout": 30}}``
    - ``{"pause": 1.5}`` (seconds)
    - ``{"say": "<clip name>"}``
    - ``{"press": "1234", "gap_ms": 300}`` (``gap_ms`` optional; digits 0-9, ``*``, ``#``)
    - ``{"hang_up": {}}``
    - ``{"wait_for_hangup": {"timeout": 30}}``

    Raises:
        ScriptError: the data does not have that shape; the message names the step.
    """
    description: object = ""
    if isinstance(data, dict):
        _only_keys(data, {"description", "steps"}, f"script {name!r}")
        raw_steps = data.get("steps")
        description = data.get("description", "")
    else:
        raw_steps = data
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScriptError(f"script {name!r}: steps must be a non-empty list")
    if not isinstance(description, str):
        raise ScriptError(f"script {name!r}: description must be a string")
    steps = tuple(_parse_step(index, raw) for index, raw in enumerate(raw_steps, 1))
    return CallerScript(steps=steps, name=name, description=description)


def load_caller_script(name_or_path: str | Path) -> CallerScript:
    """A shipped script by name (``caller_demo``) or a script file by path (``*.json``).

    Reads a small file on the calling thread: call it before the call, not in the middle.

    Raises:
        ScriptError: no shipped script has that name, or the file is not a valid script.
        OSError: the file cannot be read.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".json") or "/" in text:
        path = Path(name_or_path)
        return _parse_script_text(path.read_text(encoding="utf-8"), name=path.stem)
    shipped = resources.files(_SCRIPTS_PACKAGE).joinpath(_SCRIPTS_DIR, f"{text}.json")
    if not shipped.is_file():
        known = ", ".join(shipped_scripts()) or "none"
        raise ScriptError(f"no caller script named {text!r} (shipped: {known})")
    return _parse_script_text(shipped.read_text(encoding="utf-8"), name=text)


def shipped_scripts() -> list[str]:
    """Names of the caller scripts shipped with Archer."""
    folder = resources.files(_SCRIPTS_PACKAGE).joinpath(_SCRIPTS_DIR)
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )


def _parse_script_text(text: str, *, name: str) -> CallerScript:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ScriptError(f"script {name!r} is not JSON: {exc}") from None
    return parse_caller_script(data, name=name)


def _parse_step(index: int, raw: object) -> ScriptStep:
    where = f"step {index}"
    if not isinstance(raw, dict):
        raise ScriptError(f'{where}: must be an object such as {{"say": "caller_balance"}}')
    kinds = [key for key in raw if key in _STEP_KINDS]
    if len(kinds) != 1:
        raise ScriptError(f"{where}: needs exactly one of {', '.join(_STEP_KINDS)}")
    kind = kinds[0]
    where = f"{where} ({kind})"
    value = raw[kind]
    options = {key: item for key, item in raw.items() if key != kind}
    if kind == "press":
        _only_keys(options, {"gap_ms"}, where)
        if not isinstance(value, str) or not value or not set(value) <= DTMF_DIGITS:
            raise ScriptError(f"{where}: digits must be a non-empty string of 0-9, * and #")
        return Press(value, _whole(options.get("gap_ms", 300), "gap_ms", where))
    _only_keys(options, set(), where)
    if kind == "say":
        if not isinstance(value, str) or not value:
            raise ScriptError(f"{where}: must name a clip")
        return Say(value)
    if kind == "pause":
        return Pause(_seconds(value, "pause", where, allow_zero=True))
    if not isinstance(value, dict):
        raise ScriptError(f"{where}: must be an object (use {{}} for the defaults)")
    if kind == "hang_up":
        _only_keys(value, set(), where)
        return HangUp()
    if kind == "wait_for_agent":
        _only_keys(value, {"quiet_ms", "timeout"}, where)
        return WaitForAgent(
            quiet_ms=_whole(value.get("quiet_ms", 800), "quiet_ms", where),
            timeout=_seconds(value.get("timeout", 30.0), "timeout", where),
        )
    _only_keys(value, {"timeout"}, where)
    timeout = _seconds(value.get("timeout", 30.0), "timeout", where)
    return (
        WaitForAgentSpeech(timeout) if kind == "wait_for_agent_speech" else WaitForHangup(timeout)
    )


def _only_keys(obj: Mapping[str, object], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ScriptError(f"{where}: unknown key {', '.join(extra)}")


def _whole(value: object, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScriptError(f"{where}: {key} must be a whole number ≥ 0")
    return value


def _seconds(value: object, key: str, where: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScriptError(f"{where}: {key} must be a number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScriptError(f"{where}: {key} must be {'≥' if allow_zero else '>'} 0")
    return float(value)


def _describe(step: ScriptStep) -> str:
    """The progress line for a step."""
    match step:
        case Say(clip=clip):
            # The shipped clips say known sentences; a test's own clips are shown by name.
            return f"caller says: {clip_text(clip) if clip in CLIP_NAMES else clip}"
        case Press(digits=digits):
            return f"caller presses {digits}"
        case Pause(seconds=seconds):
            return f"caller pauses {seconds:g} s"
        case WaitForAgent():
            return "caller listens until the agent is done"
        case WaitForAgentSpeech():
            return "caller waits for the agent to speak"
        case HangUp():
            return "caller hangs up"
        case WaitForHangup():
            return "caller waits for Archer to end the call"


# --- the outcome -------------------------------------------------------------------------------


@attrs.frozen
class CallOutcome:
    """How an emulated call went, as Twilio and the caller saw it."""

    call_sid: str
    #: None when no stream was opened.
    stream_sid: str | None
    #: Archer's answer to the voice webhook, as received.
    twiml: str
    #: The caller's μ-law timeline, one 20 ms playout tick after another from the stream's start
    #: to its end: agent audio as it played, silence (0xFF) in between.
    heard: bytes = attrs.field(repr=lambda heard: f"<{len(heard)} bytes>")
    #: Mark names echoed to Archer, in order (passed by the drain, or pending at a clear).
    marks_echoed: list[str]
    clears_received: int
    media_frames_received: int
    #: Every digit sent as a ``dtmf`` event, in order.
    dtmf_sent: str
    #: ``caller`` (script done, hung up, or a step timed out), ``archer`` (closed the stream),
    #: ``twilio_rest`` (Archer updated the call over REST), ``rejected`` (webhook or stream
    #: upgrade refused), ``no_stream`` (TwiML without a usable ``<Connect><Stream>``).
    ended_by: EndedBy
    #: The number of a ``<Dial>`` Archer sent over REST, if it transferred the call.
    transferred_to: str | None
    #: From the voice webhook to the end of the call.
    duration_s: float
    #: Each distinct problem with Archer's messages (Twilio's warning 31951), once.
    invalid: list[str]
    #: HTTP status of the status callback; None if it could not be delivered.
    status_callback_status: int | None
    #: One line on why the call ended (a timeout, a refusal, the TwiML that had no stream).
    detail: str = ""
    #: Script steps finished; a ``wait_for_hangup`` counts once Archer ends the call.
    steps_done: int = 0


# --- the emulator ------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class EmulatedCaller:
    """A caller on Twilio phoning the Archer at ``archer_url``; ``run()`` places the call."""

    #: Where Archer listens, plain http (``http://127.0.0.1:8000``).
    archer_url: str
    #: Archer's WEBHOOK_BASE_URL: what Twilio signs (``https://archer.example.com``).
    public_base_url: str
    account_sid: str
    auth_token: str = attrs.field(repr=False)
    script: CallerScript
    from_number: str = "+15555550101"
    to_number: str = "+15555550000"
    call_sid: str = attrs.Factory(new_call_sid)
    #: The REST emulator's state: Archer's REST updates of this call end it as Twilio would.
    rest: TwilioRestState | None = None
    #: Called with one human-readable line per step and per event ("caller says: …").
    progress: Callable[[str], None] | None = None
    #: The audio of each ``say`` clip (8 kHz μ-law).
    clips: ClipSource = speech_clip
    #: Called with every text message the caller sends on the stream (tests check them).
    on_send: Callable[[str], None] | None = None

    def webhook_fields(self) -> dict[str, str]:
        """The voice webhook's form fields (reference §1.2), as for a first, ringing request."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": self.from_number,
            "To": self.to_number,
            "Caller": self.from_number,
            "Called": self.to_number,
        }

    async def run(self) -> CallOutcome:
        """Place the call, play the script, and report how it went.

        One call per ``run``: it uses ``call_sid``, so a second call needs another caller
        (``attrs.evolve(caller, call_sid=new_call_sid())``).

        Raises:
            KeyError: the clip source has no clip the script says (``speech_clip``'s error;
                anything else it raises passes through too). Every clip is loaded, in a worker
                thread, before anything is dialled.

        Cancellation: the stream socket is closed (without ``stop``) and no status callback is
        posted; the REST emulator's call, if any, is left in progress.
        """
        clips = await trio.to_thread.run_sync(self._load_clips)
        started = trio.current_time()
        if self.rest is not None:
            self.rest.add_call(
                self.call_sid, from_number=self.from_number, to_number=self.to_number
            )
        leg = _StreamLeg(
            caller=self,
            stream_sid=new_stream_sid(),
            clips=clips,
            rest_seen=len(self.rest.updates) if self.rest is not None else 0,
        )
        self._tell(f"caller {self.from_number} dials {self.to_number}")
        twiml = ""
        answer: StreamPlan | NoStream
        try:
            response = await self._post(VOICE_PATH, self.webhook_fields())
        except (OSError, trio.TooSlowError) as exc:
            answer = NoStream("rejected", f"11200: the voice webhook failed: {_reason(exc)}")
        else:
            twiml = response.text
            answer = read_voice_answer(response)
        if isinstance(answer, StreamPlan):
            self._tell("Archer answers; the caller is connected to the agent")
            ended_by, detail = await leg.connect_and_run(answer)
        else:
            ended_by, detail = answer.ended_by, answer.detail
            self._tell(f"the call ends: {detail}")
        duration = trio.current_time() - started
        if self.rest is not None:
            self.rest.end_call(self.call_sid)
        callback_status = await self._post_status(duration)
        return CallOutcome(
            call_sid=self.call_sid,
            stream_sid=leg.stream_sid if leg.opened else None,
            twiml=twiml,
            heard=bytes(leg.heard),
            marks_echoed=list(leg.marks_echoed),
            clears_received=leg.clears_received,
            media_frames_received=leg.media_frames_received,
            dtmf_sent=leg.dtmf_sent,
            ended_by=ended_by,
            transferred_to=leg.transferred_to,
            duration_s=duration,
            invalid=list(leg.invalid),
            status_callback_status=callback_status,
            detail=detail,
            steps_done=leg.steps_done,
        )

    def _load_clips(self) -> dict[str, bytes]:
        return {name: self.clips(name) for name in self.script.clips}

    def _tell(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    async def _post(self, path: str, fields: dict[str, str]) -> HttpResponse:
        signature = SignatureChecker(self.auth_token).sign(
            webhook_url(self.public_base_url, path), fields
        )
        return await post_form(
            self.archer_url.rstrip("/") + path, fields, headers={"X-Twilio-Signature": signature}
        )

    async def _post_status(self, duration: float) -> int | None:
        """Twilio's call status callback after the call (reference §1.4); its HTTP status."""
        fields = {
            **self.webhook_fields(),
            "CallStatus": "completed",
            "CallDuration": str(round(duration)),
            "Timestamp": format_datetime(datetime.now(UTC)),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        }
        try:
            response = await self._post(STATUS_PATH, fields)
        except (OSError, trio.TooSlowError) as exc:
            self._tell(f"the status callback failed: {_reason(exc)}")
            return None
        return response.status


@attrs.frozen
class StreamPlan:
    """Where the TwiML says to stream: the ``wss://`` URL (query dropped) and parameters."""

    url: str
    parameters: dict[str, str]
    #: The verbs after ``</Connect>``, which Twilio runs once the stream ends.
    after: str


@attrs.frozen
class NoStream:
    """The call ended before any stream: how, and why."""

    ended_by: EndedBy
    detail: str


def read_voice_answer(answer: HttpResponse) -> StreamPlan | NoStream:
    """Interpret Archer's webhook answer as Twilio would (reference §1.3, §2.2, §3.5 item 2)."""
    if answer.status != 200:
        return NoStream("rejected", f"11200: the voice webhook answered HTTP {answer.status}")
    content_type = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/xml", "application/xml"):
        return NoStream("rejected", f"12300: TwiML came with Content-Type {content_type!r}")
    try:
        root = ET.fromstring(answer.body)
    except ET.ParseError as exc:
        return NoStream("rejected", f"12100: the TwiML is not XML: {exc}")
    if root.tag != "Response":
        return NoStream("rejected", f"12102: the TwiML's root is <{root.tag}>, not <Response>")
    verbs = list(root)
    connect_at = next(
        (
            i
            for i, verb in enumerate(verbs)
            if verb.tag == "Connect" and verb.find("Stream") is not None
        ),
        None,
    )
    if connect_at is None:
        return NoStream("no_stream", f"no <Connect><Stream> in the TwiML: {_verbs(verbs)}")
    stream = verbs[connect_at].find("Stream")
    assert stream is not None  # found just above
    parts = urlsplit(stream.attrib.get("url", ""))
    if parts.scheme != "wss" or not parts.hostname:
        return NoStream(
            "no_stream", f"31922: stream URL {stream.attrib.get('url')!r} is not wss://"
        )
    if stream.attrib.get("track", "inbound_track") != "inbound_track":
        return NoStream("no_stream", "31941: <Connect><Stream> takes inbound_track only")
    parameters: dict[str, str] = {}
    for parameter in stream.iter("Parameter"):
        name, value = parameter.attrib.get("name", ""), parameter.attrib.get("value", "")
        if len(name) + len(value) >= MAX_PARAMETER_CHARS:
            return NoStream(
                "no_stream", f"<Parameter> {name[:40]!r} is {MAX_PARAMETER_CHARS}+ chars"
            )
        parameters[name] = value
    # Twilio drops the query string when dialing (reference §2.2), and signs what it dials.
    url = urlunsplit(("wss", parts.netloc, parts.path or "/", "", ""))
    return StreamPlan(url, parameters, after=_verbs(verbs[connect_at + 1 :]))


def _verbs(verbs: list[ET.Element]) -> str:
    described = [f'{verb.tag} "{verb.text.strip()}"' if verb.text else verb.tag for verb in verbs]
    return ", ".join(described) or "nothing"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@attrs.define
class _StreamLeg:
    """One media stream: its socket, its clock, the playout buffer and the running script."""

    caller: EmulatedCaller
    stream_sid: str
    clips: Mapping[str, bytes]
    #: How many REST updates the emulator had before this call; later ones may be ours.
    rest_seen: int
    opened: bool = False
    heard: bytearray = attrs.Factory(bytearray)
    marks_echoed: list[str] = attrs.Factory(list)
    clears_received: int = 0
    media_frames_received: int = 0
    dtmf_sent: str = ""
    invalid: list[str] = attrs.Factory(list)
    transferred_to: str | None = None
    steps_done: int = 0
    ended_by: EndedBy | None = None
    detail: str = ""
    _websocket: trio_websocket.WebSocketConnection | None = None
    _scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    # One writer at a time, so sequence numbers go out in the order they are given.
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)
    _sequence: int = 0
    _chunk: int = 0
    _playout: PlayoutBuffer = attrs.Factory(PlayoutBuffer)
    _mouth: bytearray = attrs.Factory(bytearray)
    _mouth_empty: trio.Event | None = None
    _ticked: trio.Event = attrs.Factory(trio.Event)
    #: Ticks that played agent audio, and the current run of ticks that played none.
    _agent_ticks: int = 0
    _quiet_ticks: int = 0
    _step: ScriptStep | None = None

    async def connect_and_run(self, plan: StreamPlan) -> tuple[EndedBy, str]:
        """Dial the stream, run the call on it, and say how it ended."""
        signature = SignatureChecker(self.caller.auth_token).sign(plan.url, {})
        try:
            async with open_websocket_client(
                local_stream_url(self.caller.archer_url, plan.url),
                extra_headers=[(b"X-Twilio-Signature", signature.encode())],
                max_message_size=MAX_MESSAGE_BYTES,
            ) as websocket:
                self._websocket = websocket
                self.opened = True
                await self._run(plan)
        except* trio_websocket.ConnectionRejected as group:
            status = _first(group, trio_websocket.ConnectionRejected).status_code
            self._end("rejected", f"31920: the stream upgrade was refused with HTTP {status}")
        except* trio_websocket.HandshakeError as group:
            reason = _reason(_first(group, trio_websocket.HandshakeError))
            self._end("rejected", f"31920: the stream handshake failed: {reason}")
        except* OSError as group:
            reason = _reason(_first(group, OSError))
            if self.opened:
                self._end("archer", f"31903: the stream connection broke: {reason}")
            else:
                self._end("no_stream", f"31902: cannot reach the stream: {reason}")
        if self.ended_by == "archer" and plan.after:
            self.detail = f"Archer closed the stream; the TwiML goes on to: {plan.after}"
        assert self.ended_by is not None  # every way out of _run ends the leg
        return self.ended_by, self.detail

    async def _run(self, plan: StreamPlan) -> None:
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "start": {
                    "accountSid": self.caller.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.caller.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": plan.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_archer)
                nursery.start_soon(self._tick_forever)
                if self.caller.rest is not None:
                    nursery.start_soon(self._watch_rest, self.caller.rest)
                nursery.start_soon(self._run_script)

    # --- ending -------------------------------------------------------------------------

    def _end(self, by: EndedBy, detail: str = "") -> bool:
        """Record how the call ended (the first reason wins) and stop everything."""
        if self.ended_by is not None:
            return False
        self.ended_by, self.detail = by, detail
        if by in ("archer", "twilio_rest") and isinstance(self._step, WaitForHangup):
            self.steps_done += 1  # this is exactly what the step was waiting for
        self._scope.cancel()
        return True

    async def _stop_and_end(self, by: EndedBy, detail: str = "") -> None:
        """Twilio's side ends the stream: ``stop`` goes out, then the socket closes."""
        async with self._send_lock:
            if self.ended_by is not None:
                return
            await self._send_locked(
                {
                    "event": "stop",
                    "streamSid": self.stream_sid,
                    "stop": {
                        "accountSid": self.caller.account_sid,
                        "callSid": self.caller.call_sid,
                    },
                }
            )
            self._end(by, detail)

    def _archer_closed(self) -> None:
        if self._end("archer", "Archer closed the stream"):
            self.caller._tell("Archer hung up")

    # --- sending --------------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            if self.ended_by is None:
                await self._send_locked(frame)

    async def _send_locked(self, frame: dict[str, Any]) -> None:
        assert self._websocket is not None
        if frame["event"] != "connected":
            # One counter over every message after ``connected`` (reference §3.2).
            self._sequence += 1
            frame = {"event": frame["event"], "sequenceNumber": str(self._sequence), **frame}
        text = json.dumps(frame)
        if self.caller.on_send is not None:
            self.caller.on_send(text)
        try:
            await self._websocket.send_message(text)
        except trio_websocket.ConnectionClosed:
            self._archer_closed()

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    # --- receiving ------------------------------------------------------------------------

    async def _read_archer(self) -> None:
        assert self._websocket is not None
        while True:
            try:
                message = await self._websocket.get_message()
            except trio_websocket.ConnectionClosed:
                self._archer_closed()
                return
            for name in self._receive(message):
                await self._echo_mark(name)

    def _receive(self, message: str | bytes) -> list[str]:
        """Apply one message from Archer; the marks a ``clear`` hands back for echoing."""
        try:
            event = parse_outbound(message, stream_sid=self.stream_sid)
        except TwilioProtocolError as exc:
            problem = f"31951: {exc}"
            if problem not in self.invalid:
                self.invalid.append(problem)
            return []
        match event:
            case OutboundMedia(payload=payload):
                self.media_frames_received += 1
                self._playout.append(base64.b64decode(payload))
            case OutboundMark(name=name):
                self._playout.mark(name)
            case OutboundClear():
                self.clears_received += 1
                if self._playout.playing:
                    self.caller._tell("Archer clears the agent's audio (barge-in)")
                return self._playout.clear()
        return []

    # --- the 20 ms clock ------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        # An absolute schedule: a late tick is followed by quick ones until the clock is caught
        # up, so the stream never drifts from real time.
        epoch = trio.current_time()
        ticks = 0
        while True:
            ticks += 1
            await trio.sleep_until(epoch + ticks * FRAME_MS / 1000)
            tick = self._playout.tick(FRAME_MS)
            self.heard += tick.heard
            if tick.played:
                quiet_ms = self._quiet_ticks * FRAME_MS
                if self._agent_ticks == 0 or quiet_ms >= _ANNOUNCE_AFTER_QUIET_MS:
                    self.caller._tell("caller hears agent audio")
                self._agent_ticks += 1
                self._quiet_ticks = 0
            else:
                self._quiet_ticks += 1
            for name in tick.echoed:
                await self._echo_mark(name)
            await self._send_media(self._next_caller_frame())
            self._ticked.set()
            self._ticked = trio.Event()

    def _next_caller_frame(self) -> bytes:
        if not self._mouth:
            return _SILENT_FRAME
        frame = bytes(self._mouth[:FRAME_BYTES])
        del self._mouth[:FRAME_BYTES]
        if not self._mouth and self._mouth_empty is not None:
            self._mouth_empty.set()
        return frame + _SILENT_FRAME[len(frame) :]

    async def _send_media(self, ulaw: bytes) -> None:
        self._chunk += 1
        await self._send(
            {
                "event": "media",
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(FIRST_TIMESTAMP_MS + (self._chunk - 1) * FRAME_MS),
                    "payload": base64.b64encode(ulaw).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait for the first tick after which ``done()`` holds."""
        while not done():
            await self._ticked.wait()

    # --- REST -----------------------------------------------------------------------------

    async def _watch_rest(self, rest: TwilioRestState) -> None:
        """Archer updating this call over REST ends the stream, as on Twilio (reference §5.2)."""
        seen = self.rest_seen
        while True:
            updates = await rest.wait_for_updates(seen + 1)
            for update in updates[seen:]:
                if update.call_sid == self.caller.call_sid:
                    await self._rest_update(update.fields)
                    return
            seen = len(updates)

    async def _rest_update(self, fields: Mapping[str, str]) -> None:
        dialled = _dialled(fields.get("Twiml", ""))
        if dialled is not None:
            self.transferred_to = dialled
            line = f"transferred to {dialled}"
        elif fields.get("Status") in ("completed", "canceled"):
            line = "Archer hung up over REST"
        else:
            line = "Archer moved the call on over REST"
        await self._stop_and_end("twilio_rest", line)
        self.caller._tell(line)

    # --- the script -----------------------------------------------------------------------

    async def _run_script(self) -> None:
        for index, step in enumerate(self.caller.script.steps, 1):
            self._step = step
            self.caller._tell(_describe(step))
            if isinstance(step, HangUp):
                self.steps_done += 1
                await self._stop_and_end("caller", "the caller hung up")
                return
            timeout = (
                step.timeout
                if isinstance(step, WaitForAgent | WaitForAgentSpeech | WaitForHangup)
                else math.inf
            )
            with trio.move_on_after(timeout) as deadline:
                await self._play(step)
            if deadline.cancelled_caught:
                detail = f"step {index} ({_KIND_OF[type(step)]}) timed out after {timeout:g} s"
                self.caller._tell(f"{detail}; caller hangs up")
                await self._stop_and_end("caller", detail)
                return
            self.steps_done += 1
        self._step = None
        self.caller._tell("caller hangs up")
        await self._stop_and_end("caller", "the script is done; the caller hung up")

    async def _play(self, step: ScriptStep) -> None:
        match step:
            case Say(clip=clip):
                self._mouth_empty = spoken = trio.Event()
                self._mouth = bytearray(self.clips[clip])
                if not self._mouth:
                    spoken.set()
                await spoken.wait()
            case Press(digits=digits, gap_ms=gap_ms):
                for position, digit in enumerate(digits):
                    if position:
                        await trio.sleep(gap_ms / 1000)
                    self.dtmf_sent += digit
                    await self._send(
                        {
                            "event": "dtmf",
                            "streamSid": self.stream_sid,
                            "dtmf": {"track": "inbound_track", "digit": digit},
                        }
                    )
            case Pause(seconds=seconds):
                await trio.sleep(seconds)
            case WaitForAgent(quiet_ms=quiet_ms):
                heard_before = self._agent_ticks
                quiet_ticks = math.ceil(quiet_ms / FRAME_MS)
                await self._until(
                    lambda: self._agent_ticks > heard_before and self._quiet_ticks >= quiet_ticks
                )
            case WaitForAgentSpeech():
                heard_before = self._agent_ticks
                await self._until(lambda: self._agent_ticks > heard_before)
            case WaitForHangup():
                await trio.sleep_forever()  # ended by _end, which cancels the script
            case HangUp():
                raise AssertionError("hang_up is handled by the script runner")


def local_stream_url(archer_url: str, stream_url: str) -> str:
    """The stream URL's path on Archer's local address, ``ws://`` for ``http://``."""
    local = urlsplit(archer_url)
    scheme = "wss" if local.scheme == "https" else "ws"
    return urlunsplit((scheme, local.netloc, urlsplit(stream_url).path or "/", "", ""))


def _dialled(twiml: str) -> str | None:
    """The number of a ``<Dial>`` in REST TwiML (text or ``<Number>``), if there is one."""
    if not twiml:
        return None
    try:
        dial = ET.fromstring(twiml).find("Dial")
    except ET.ParseError:
        return None
    if dial is None:
        return None
    number = dial.find("Number")
    return ((number.text if number is not None else dial.text) or "").strip() or None


def _first(group: BaseExceptionGroup[_E], kind: type[_E]) -> _E:
    """The first leaf of an ``except*`` group (trio-websocket nests them in nurseries)."""
    leaf: BaseException = group.exceptions[0]
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, kind)
    return leaf
