"""An emulator of Cartesia's agent WebSockets (Managed Agents and Line) playing a scripted agent.

Layer: emulator (trio-websocket server). Product code: the demo, ``archer emulate cartesia`` and
the end-to-end tests talk to it exactly as Archer talks to Cartesia. Wire format from
``archer.cartesia.managed`` and ``archer.cartesia.line`` (every server message is built there);
behaviour from an ``AgentScript`` (``archer.emulators.agent_script``); speech from 8 kHz μ-law
clips. One emulator serves both protocols and plays the same script on either: this module has
the upgrade, the protocol-neutral script player (``ScriptedCall``) and the Managed session;
``archer.emulators.cartesia_line`` has the Line session.

Upgrade (both protocols): authentication first, as a gateway does: ``X-API-Key`` or
``Authorization: Bearer`` must be the key, else HTTP 401; then the path must be
``/v1/agents/websocket/{agent_id}`` (Managed) or ``/agents/stream/{agent_id}`` (Line), else
404. ``cartesia_version`` (query, which wins) or ``Cartesia-Version`` is recorded.

Managed rules followed (reference ../shared/reference/cartesia-agents.md §2.B, §4, §8):

- ``session_create`` must be the first message, within ``session_create_timeout``; silence
  closes 1008. Any other first event, or one ``parse_client_event`` refuses (unknown fields
  included), gets ``error`` (``invalid_event``, or ``invalid_dynamic_variables`` when the
  variables are the problem) with ``fatal: true`` and a close 1008.
- After ``session_create``: audio sent before ``session_ready`` (``ready_delay`` later) is
  dropped and counted. A message that is not a recognisable client event (binary, not JSON, not
  an object, no or unknown ``type``) is fatal: ``error`` then close 1008. A recognisable event
  with a bad field (a bad DTMF digit, audio that is not base64, a second ``session_create``) or
  a ``client_tool_result`` for an id never issued gets a non-fatal ``error`` and is ignored. A
  late or duplicate result for an id that was issued is silently ignored, as Cartesia documents.
- One turn counter for both roles from 1. Assistant turns stream their words as deltas spread
  over the clip; a turn's ``tool_calls`` are the tools called since the previous assistant turn
  (the model calls them before it speaks). Hanging up closes 1000 ``call ended by agent`` with no
  final ``turn_ended``. After the last step the agent waits for the client to close.
- Caller speech is detected with ``EnergyVad`` on the caller's audio, in 20 ms frames. It stops
  an interruptible ``say`` (``audio_output_clear``, ``turn_ended`` interrupted); ``listen``
  hears the oldest utterance not yet heard (the one in progress after a barge-in, or one spoken
  over an uninterruptible ``say``) or waits for the next.
- A script with a ``transfer`` step (Line only) fails at ``session_create``: fatal ``error``
  ``agent_failed`` and a close 1011, as an agent that cannot start.
"""

from __future__ import annotations

import abc
import binascii
import collections
import json
import re
import secrets
import string
from base64 import b64encode
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import numpy as np
import soxr
import trio
import trio_websocket

from archer.audio import clips, g711
from archer.audio.vad import EnergyVad, SpeechStarted, VadEvent
from archer.cartesia import line, managed
from archer.emulators.agent_script import (
    PLACEHOLDER,
    AgentScript,
    AgentScriptError,
    CallTool,
    CollectDtmf,
    Listen,
    Pause,
    Say,
    SendDtmf,
    Step,
    Transfer,
    load_agent_script,
)
from archer.errors import CartesiaProtocolError

__all__ = [
    "AgentScript",
    "CartesiaEmulator",
    "Clip",
    "ClipSource",
    "EmulatedSession",
    "EmulatedToolCall",
    "ScriptedCall",
    "bundled_clip",
    "load_agent_script",
    "serve_cartesia_emulator",
]

#: Largest message accepted: 1 MiB, what Cartesia clients allow for audio.
MAX_MESSAGE_SIZE: Final = 1024 * 1024
FRAME_SECONDS: Final = 0.02
#: A close handshake gets this long before the connection is dropped.
CLOSE_TIMEOUT: Final = 2.0
#: Cartesia replaces a larger result with a ``result_too_large`` error result.
MAX_TOOL_RESULT_BYTES: Final = 4096
SAMPLE_RATES: Final = {
    "mulaw_8000": 8000,
    "pcm_16000": 16000,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
}

_BASE62: Final = string.ascii_letters + string.digits
_CLIENT_TYPES: Final = frozenset(
    {"session_create", "audio_input", "dtmf_input", "client_tool_result"}
)
_WORD: Final = re.compile(r"\S+\s*")
_MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: a close frame's payload is at most 125 bytes
TRANSFER_ON_MANAGED: Final = (
    "transfer is a Line step; managed agents use the transfer_to_human tool"
)


@attrs.frozen(slots=True)
class Clip:
    """Something the agent can say: 8 kHz μ-law ``audio`` and the words it speaks."""

    audio: bytes = attrs.field(repr=lambda audio: f"<{len(audio)} bytes>")
    text: str


ClipSource = Callable[[str], Clip]


def bundled_clip(name: str) -> Clip:
    """Clip ``name`` from Archer's recorded speech (``archer.audio.clips``).

    Raises:
        KeyError: no clip has that name.
    """
    return Clip(audio=clips.speech_clip(name), text=clips.clip_text(name))


@attrs.frozen(slots=True)
class EmulatedToolCall:
    """A ``client_tool_call`` the agent sent, with its placeholders filled in."""

    tool_call_id: str
    name: str
    parameters: Mapping[str, object]


@attrs.define
class EmulatedSession:
    """Everything one connection did, for tests and the demo to inspect."""

    call_id: str
    agent_version_id: str
    cartesia_version: str | None
    #: Which endpoint the client used: Managed Agents or Line (``/agents/stream``).
    protocol: Literal["managed", "line"] = "managed"
    #: The agent id in the path the client connected to.
    agent_id: str = "agent_emulated"
    input_format: str | None = None
    output_delivery: str | None = None
    dynamic_variables: dict[str, managed.DynamicValue] = attrs.Factory(dict)
    #: Line: the ``stream_id`` (the client's, or ``sid_`` + 16 hex) and ``start.metadata``.
    stream_id: str | None = None
    metadata: dict[str, object] = attrs.Factory(dict)
    #: Every client event that parsed, in order (refused ones are in ``errors_sent``).
    events: list[managed.ClientEvent | line.ClientEvent] = attrs.Factory(list)
    dtmf_digits: list[str] = attrs.Factory(list)
    tool_calls: list[EmulatedToolCall] = attrs.Factory(list)
    #: Answers to ``tool_calls`` (Line's custom-event answers are stored in the same shape).
    tool_results: dict[str, managed.ClientToolResult] = attrs.Factory(dict)
    #: Line: ``custom`` metadata from the client that was not a tool result.
    custom_received: list[dict[str, object]] = attrs.Factory(list)
    #: Line: numbers the agent asked the client to transfer the call to.
    transfers: list[str] = attrs.Factory(list)
    #: What ``collect_dtmf`` and ``tool`` steps stored with ``into``.
    variables: dict[str, str] = attrs.Factory(dict)
    #: Audio messages that arrived before the session was ready (dropped, as Cartesia does).
    audio_dropped_before_ready: int = 0
    #: Caller audio heard once ready, raw, in ``input_format``.
    caller_audio: bytearray = attrs.Factory(bytearray)
    #: Managed ``error`` events sent (Line has no error event: it closes 1008 instead).
    errors_sent: list[managed.Error] = attrs.Factory(list)
    ended_by: Literal["agent", "client"] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    #: Set when the connection is over, whoever ended it.
    ended: trio.Event = attrs.Factory(trio.Event)


@attrs.define
class CartesiaEmulator:
    """Both agent endpoints for one agent, playing ``script`` on every connection.

    Clips are loaded when the emulator is made (build it before serving): a script naming an
    unknown clip fails here, not mid-call.
    """

    api_key: str = attrs.field(repr=False)
    script: AgentScript
    agent_id: str = "agent_emulated"
    #: More agent ids served the same way (``archer emulate cartesia`` adds CARTESIA_AGENT_ID, so
    #: one ``.env`` configures Archer and the emulator alike).
    also_agent_ids: frozenset[str] = frozenset()
    #: Seconds the first message (``session_create``, Line's ``start``) may take.
    session_create_timeout: float = 10.0
    #: Seconds between the first message and readiness (Managed ``session_ready``; on Line,
    #: after the immediate ``ack``); audio in between is dropped.
    ready_delay: float = 0.0
    #: Line only: a session with no client message for this long closes 1000
    #: ``connection idle timeout``.
    idle_timeout: float = 180.0
    #: Called with one human-readable line per notable step.
    progress: Callable[[str], None] | None = None
    clips: ClipSource = bundled_clip
    sessions: list[EmulatedSession] = attrs.Factory(list)
    _clips: dict[str, Clip] = attrs.field(init=False, factory=dict, repr=False)
    _rendered: dict[tuple[str, str], bytes] = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        for name in sorted(self.script.clip_names()):
            try:
                self._clips[name] = self.clips(name)
            except KeyError as exc:
                raise AgentScriptError(
                    f"agent script {self.script.name!r}: clip {name!r} cannot be loaded: "
                    f"{exc.args[0] if exc.args else exc}"
                ) from None

    def report(self, line: str) -> None:
        """Pass ``line`` to ``progress``, if set."""
        if self.progress is not None:
            self.progress(line)

    def clip(self, name: str) -> Clip:
        """The loaded clip ``name`` (one the script says)."""
        return self._clips[name]

    def rendered(self, name: str, input_format: str) -> bytes:
        """Clip ``name`` in ``input_format``, padded with silence to whole 20 ms chunks.

        PCM formats decode the μ-law and resample the whole clip once (then cached), so chunk
        boundaries never click.
        """
        key = (name, input_format)
        if key not in self._rendered:
            ulaw = self._clips[name].audio
            rate = SAMPLE_RATES[input_format]
            if input_format == "mulaw_8000":
                audio, silence = ulaw, bytes([g711.SILENCE])
            else:
                resampled = soxr.resample(g711.decode_samples(ulaw), clips.SAMPLE_RATE, rate)
                audio, silence = np.asarray(resampled, dtype="<i2").tobytes(), b"\x00\x00"
            chunk = chunk_bytes(input_format)
            audio += silence * ((-len(audio) % chunk) // len(silence))
            self._rendered[key] = audio
        return self._rendered[key]

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        """Serve one connection: check the upgrade, then run the script until it ends.

        Cancellation: the connection is dropped; the session is marked ended.
        """
        parts = urlsplit(request.path)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        if not self._authorised(headers):
            self.report("refused a connection: bad API key (401)")
            await request.reject(401, body=b"invalid API key")
            return
        protocol: Literal["managed", "line"]
        path = unquote(parts.path)
        served = {self.agent_id, *self.also_agent_ids}
        agent_id = path.rpartition("/")[2]
        if agent_id in served and path == f"/v1/agents/websocket/{agent_id}":
            protocol = "managed"
        elif agent_id in served and path == f"/agents/stream/{agent_id}":
            protocol = "line"
        else:
            self.report(f"refused a connection: no agent at {parts.path[:80]} (404)")
            await request.reject(404, body=b"agent not found")
            return
        # On Cartesia's WebSockets the query parameter wins over the header.
        version = parse_qs(parts.query).get("cartesia_version", [None])[0]
        session = EmulatedSession(
            call_id=_random_id("ac_"),
            agent_version_id=_random_id("av_"),
            cartesia_version=version or headers.get("cartesia-version"),
            protocol=protocol,
            agent_id=agent_id,
        )
        self.sessions.append(session)
        try:
            websocket = await request.accept()
            if protocol == "line":
                # Deferred: the Line session builds on ScriptedCall, defined below.
                from archer.emulators.cartesia_line import LineCall

                await LineCall(self, websocket, session).run()
            else:
                await _ManagedCall(self, websocket, session).run()
        except trio_websocket.ConnectionClosed:
            session.ended_by = "client"  # gone during the upgrade, before any session began
        finally:
            session.ended.set()

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        key = headers.get("x-api-key")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if key is None and scheme.lower() == "bearer":
            key = token.strip()
        return key is not None and secrets.compare_digest(key.encode(), self.api_key.encode())


async def serve_cartesia_emulator(
    emulator: CartesiaEmulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``emulator`` on ``host:port``; ``nursery.start`` returns its ``ws://`` base URL.

    Cancellation: cancel to stop serving; open sessions end with it.
    """
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                emulator.handle,
                host,
                port,
                None,
                max_message_size=MAX_MESSAGE_SIZE,
            )
        )
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"ws://{shown}:{server.port}")


def chunk_bytes(input_format: str) -> int:
    """Bytes of 20 ms of audio in ``input_format`` (μ-law 1 byte a sample, PCM 2)."""
    width = 1 if input_format == "mulaw_8000" else 2
    return SAMPLE_RATES[input_format] * width // 50


def _random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(22))


def _is_client_event(message: str | bytes) -> bool:
    """Whether ``message`` is a JSON object naming a client event (however badly filled in)."""
    if not isinstance(message, str):
        return False
    try:
        event = json.loads(message)
    except (ValueError, RecursionError):
        return False
    return isinstance(event, dict) and event.get("type") in _CLIENT_TYPES


def _substitute(value: object, variables: Mapping[str, str]) -> object:
    """``value`` with every ``{name}`` in its strings replaced by the variable's value."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda match: variables.get(match[1], match[0]), value)
    if isinstance(value, Mapping):
        return {key: _substitute(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, variables) for item in value]
    return value


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@attrs.define
class _Utterance:
    """One stretch of caller speech, in session seconds (``ended`` is ``None`` while it lasts)."""

    started: float
    ended: float | None = None


@attrs.define
class ScriptedCall(abc.ABC):
    """One connection's state while its script plays; the reader and the script share it.

    Protocol-neutral: subclasses (``_ManagedCall`` here, ``LineCall`` in
    ``archer.emulators.cartesia_line``) do the handshake, parse what the client sends and build
    what the agent sends; this class paces speech, hears the caller, waits for digits and tool
    results, and runs the steps.
    """

    emulator: CartesiaEmulator
    websocket: trio_websocket.WebSocketConnection
    session: EmulatedSession
    input_format: str = "mulaw_8000"
    ready: bool = False
    turn: int = 0
    started_at: float = 0.0
    vad: EnergyVad = attrs.Factory(EnergyVad)
    pending_audio: bytearray = attrs.Factory(bytearray)
    #: Every stretch of caller speech, in order; ``listen`` hears each once.
    utterances: list[_Utterance] = attrs.Factory(list)
    heard: int = 0
    digits: collections.deque[str] = attrs.Factory(collections.deque)
    open_tool_calls: set[str] = attrs.Factory(set)
    #: Tool calls made since the last assistant turn, for that next turn's ``tool_calls``.
    unreported_tools: list[dict[str, object]] = attrs.Factory(list)
    changed: trio.Event = attrs.Factory(trio.Event)

    # ---- what a protocol provides ----------------------------------------------------------

    @abc.abstractmethod
    async def _handshake(self) -> bool:
        """Receive the client's first message and answer it; ``False`` once closed instead."""
        ...

    @abc.abstractmethod
    async def _become_ready(self) -> None:
        """Wait out ``ready_delay`` and tell the client (if the protocol does); then ready."""
        ...

    @abc.abstractmethod
    async def _on_message(self, message: str | bytes) -> bool:
        """Handle one client message; ``False`` once the socket is closed because of it."""
        ...

    @abc.abstractmethod
    async def _say(self, step: Say) -> None: ...

    @abc.abstractmethod
    async def _send_audio(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def _send_clear(self) -> None: ...

    @abc.abstractmethod
    async def _send_dtmf(self, digit: str) -> None: ...

    @abc.abstractmethod
    async def _send_tool_call(
        self, tool_call_id: str, name: str, parameters: Mapping[str, object]
    ) -> None: ...

    @abc.abstractmethod
    async def _transfer(self, step: Transfer) -> None: ...

    # Optional hooks, empty by default: Managed announces user turns, Line has none to send.
    async def _user_turn_started(self, utterance: _Utterance) -> None:  # noqa: B027
        """The caller began the utterance a ``listen`` hears (a protocol may announce it)."""

    async def _user_turn_ended(  # noqa: B027
        self, utterance: _Utterance, transcript: str, ended: float
    ) -> None:
        """The caller finished it (a protocol may send the transcript)."""

    async def _next_message(self) -> str | bytes | None:
        """The next client message; ``None`` once the agent closed the socket instead."""
        return await self.websocket.get_message()

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not await self._handshake():
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._play)
                await self._read_until_closed()
                nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionClosed as exc:
            self._client_closed(exc)

    async def _play(self) -> None:
        try:
            await self._become_ready()
            self.ready = True
            for step in self.emulator.script.steps:
                if not await self._run_step(step):
                    return
            self.emulator.report("agent's script is done; waiting for the client to hang up")
        except trio_websocket.ConnectionClosed:
            pass  # the reader records how it ended

    async def _read_until_closed(self) -> None:
        try:
            while True:
                message = await self._next_message()
                if message is None or not await self._on_message(message):
                    return
        except trio_websocket.ConnectionClosed as exc:
            self._client_closed(exc)

    def _client_closed(self, exc: trio_websocket.ConnectionClosed) -> None:
        if self.session.ended_by is None:
            code = exc.reason.code if exc.reason is not None else None
            self.session.ended_by, self.session.close_code = "client", code
            self.session.close_reason = exc.reason.reason if exc.reason is not None else None
            self.emulator.report(f"client closed the session (code {code})")

    async def _close(self, code: int, reason: str) -> None:
        reason = reason.encode()[:_MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
        if self.session.ended_by is None:
            self.session.ended_by = "agent"
            self.session.close_code, self.session.close_reason = code, reason
        # Shielded: the reader sees our close at once and cancels the script that called this.
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await self.websocket.aclose(code, reason)

    # ---- what the client sends -------------------------------------------------------------

    def _hear(self, audio: bytes) -> None:
        """Caller audio (decoded, in ``input_format``) after the session is ready."""
        self.session.caller_audio += audio
        self.pending_audio += audio
        frame = chunk_bytes(self.input_format)
        while len(self.pending_audio) >= frame:
            chunk = bytes(self.pending_audio[:frame])
            del self.pending_audio[:frame]
            if self.input_format == "mulaw_8000":
                samples = g711.decode_samples(chunk)
            else:
                samples = np.frombuffer(chunk, dtype="<i2")
            event = self.vad.feed(samples, duration_ms=FRAME_SECONDS * 1000)
            if event is not None:
                self._on_speech(event)

    def _on_speech(self, event: VadEvent) -> None:
        # The VAD dates events on the audio's timeline; the newest audio is "now".
        at = round(max(0.0, self._now() - (self.vad.position_ms - event.at_ms) / 1000), 3)
        if isinstance(event, SpeechStarted):
            self.utterances.append(_Utterance(started=at))
        else:
            self.utterances[-1].ended = at
        self._changed()

    def _keyed(self, digit: str) -> None:
        self.session.dtmf_digits.append(digit)
        self.digits.append(digit)
        self._changed()

    def _tool_answered(self, result: managed.ClientToolResult) -> bool:
        """Record ``result`` if its call is open; ``False`` if no call ever had its id.

        A late or duplicate result for an id that was issued is silently ignored.
        """
        if result.tool_call_id in self.open_tool_calls:
            self.open_tool_calls.discard(result.tool_call_id)
            self.session.tool_results[result.tool_call_id] = result
            self._changed()
            return True
        return any(call.tool_call_id == result.tool_call_id for call in self.session.tool_calls)

    # ---- the script ------------------------------------------------------------------------

    async def _run_step(self, step: Step) -> bool:
        """Run one step; ``False`` when the agent hung up."""
        if isinstance(step, Say):
            await self._say(step)
        elif isinstance(step, Listen):
            await self._listen(step)
        elif isinstance(step, CollectDtmf):
            await self._collect_dtmf(step)
        elif isinstance(step, CallTool):
            await self._call_tool(step)
        elif isinstance(step, SendDtmf):
            self.emulator.report(f"agent presses {step.digits}")
            for digit in step.digits:
                await self._send_dtmf(digit)
        elif isinstance(step, Pause):
            await trio.sleep(step.seconds)
        elif isinstance(step, Transfer):
            await self._transfer(step)
        else:
            because = f", reason: {step.reason}" if step.reason else ""
            self.emulator.report(f"agent hangs up{because}")
            await self._close(1000, f"{line.CALL_ENDED_BY_AGENT}{because}")
            return False
        return True

    def _chunks(self, clip: str) -> list[bytes]:
        """Clip ``clip`` in the session's format, in 20 ms chunks."""
        audio = self.emulator.rendered(clip, self.input_format)
        size = chunk_bytes(self.input_format)
        return [audio[at : at + size] for at in range(0, len(audio), size)]

    async def _speak(
        self,
        chunks: list[bytes],
        *,
        interruptible: bool,
        paced: bool = True,
        on_chunk: Callable[[int], Awaitable[None]] | None = None,
    ) -> bool:
        """Play ``chunks`` over their length; ``False`` if the caller barged in (cleared).

        ``paced`` sends each chunk on time, else all at once first (the clip still lasts its
        length). ``on_chunk(index)`` runs as each chunk falls due, before it is sent.
        """
        if not paced:
            for chunk in chunks:
                await self._send_audio(chunk)
        # An absolute schedule: a slow send delays one chunk, never every later one.
        begin = trio.current_time()
        for index, chunk in enumerate(chunks):
            await trio.sleep_until(begin + index * FRAME_SECONDS)
            if interruptible and self.vad.speaking:
                self.emulator.report("agent hears the caller (barge-in)")
                await self._send_clear()
                return False
            if on_chunk is not None:
                await on_chunk(index)
            if paced:
                await self._send_audio(chunk)
        await trio.sleep_until(begin + len(chunks) * FRAME_SECONDS)
        return True

    async def _listen(self, step: Listen) -> None:
        # The oldest speech not yet heard: usually the caller starts now, or is already
        # speaking (the barge-in that stopped the last say); speech during an uninterruptible
        # say is heard after it, as a real agent transcribes everything.
        with trio.move_on_after(step.timeout) as waiting:
            await self._wait_until(lambda: len(self.utterances) > self.heard)
        if waiting.cancelled_caught:
            self.emulator.report(f"agent heard nothing for {step.timeout:g} s; moving on")
            return
        utterance = self.utterances[self.heard]
        self.heard += 1
        await self._user_turn_started(utterance)
        with trio.move_on_after(step.timeout):
            await self._wait_until(lambda: utterance.ended is not None)
        ended = self._now() if utterance.ended is None else utterance.ended
        self.emulator.report(f"agent hears: {step.transcript}")
        await self._user_turn_ended(utterance, step.transcript, max(utterance.started, ended))

    async def _collect_dtmf(self, step: CollectDtmf) -> None:
        # Digits keyed earlier (say, during the prompt) count: callers type ahead.
        keyed: list[str] = []
        with trio.move_on_after(step.timeout) as waiting:
            while len(keyed) < step.digits:
                await self._wait_until(lambda: bool(self.digits))
                keyed.append(self.digits.popleft())
        self.session.variables[step.into] = "".join(keyed)
        if waiting.cancelled_caught:
            self.emulator.report(
                f"agent stops waiting for digits: {len(keyed)} of {step.digits} keyed"
            )
        else:
            self.emulator.report(f"agent collects {step.digits} digits into {step.into}")

    async def _call_tool(self, step: CallTool) -> None:
        tool_call_id = "call_" + secrets.token_hex(6)
        parameters = _substitute(dict(step.arguments), self.session.variables)
        assert isinstance(parameters, dict)
        self.session.tool_calls.append(EmulatedToolCall(tool_call_id, step.name, parameters))
        self.open_tool_calls.add(tool_call_id)
        self.emulator.report(f"agent calls {step.name}")
        await self._send_tool_call(tool_call_id, step.name, parameters)
        with trio.move_on_after(step.timeout) as waiting:
            await self._wait_until(lambda: tool_call_id in self.session.tool_results)
        if waiting.cancelled_caught:
            self.open_tool_calls.discard(tool_call_id)  # a late result is ignored
            outcome = "Tool call timed out"
            self.emulator.report(f"{step.name} timed out after {step.timeout:g} s")
        else:
            result = self.session.tool_results[tool_call_id]
            outcome = result.result
            if len(result.result.encode()) > MAX_TOOL_RESULT_BYTES:
                outcome = "result_too_large"
                self.emulator.report(f"{step.name} result is over {MAX_TOOL_RESULT_BYTES} bytes")
            elif result.is_error:
                outcome = result.result or "Tool call failed"
                self.emulator.report(f"{step.name} failed: {_shorten(outcome)}")
            else:
                self.emulator.report(f"{step.name} returned: {_shorten(outcome)}")
        if step.into is not None:
            self.session.variables[step.into] = outcome
        self.unreported_tools.append(
            {"id": tool_call_id, "name": step.name, "arguments": parameters, "result": outcome}
        )

    # ---- helpers ---------------------------------------------------------------------------

    def _now(self) -> float:
        """Seconds since the session started (its first message arrived), as turns are dated."""
        return round(trio.current_time() - self.started_at, 3)

    def _next_turn(self) -> int:
        self.turn += 1
        return self.turn

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()


@attrs.define
class _ManagedCall(ScriptedCall):
    """A Managed Agents session (``/v1/agents/websocket``): turn events, client tool calls."""

    output_delivery: str = "speaking_pace"
    user_turn: int = 0

    async def _handshake(self) -> bool:
        message: str | bytes | None = None
        with trio.move_on_after(self.emulator.session_create_timeout):
            message = await self.websocket.get_message()
        if message is None:
            timeout = self.emulator.session_create_timeout
            self.emulator.report(f"no session_create within {timeout:g} s: closing 1008")
            await self._close(1008, f"no session_create within {timeout:g} s")
            return False
        try:
            event = managed.parse_client_event(message)
        except CartesiaProtocolError as exc:
            # Cartesia names bad variables with their own code; they too prevent the start.
            problem = str(exc)
            code = (
                "invalid_dynamic_variables" if "dynamic_variables" in problem else "invalid_event"
            )
            await self._fatal(problem, code=code)
            return False
        self.session.events.append(event)
        if not isinstance(event, managed.SessionCreate):
            await self._fatal(f"the first event must be session_create, not {type(event).__name__}")
            return False
        if self.emulator.script.line_only():
            await self._fatal(TRANSFER_ON_MANAGED, code="agent_failed", close_code=1011)
            return False
        self.started_at = trio.current_time()
        self.input_format, self.output_delivery = event.input_format, event.output_delivery
        self.session.input_format = event.input_format
        self.session.output_delivery = event.output_delivery
        self.session.dynamic_variables = dict(event.dynamic_variables)
        return True

    async def _become_ready(self) -> None:
        if self.emulator.ready_delay > 0:
            await trio.sleep(self.emulator.ready_delay)
        await self.websocket.send_message(
            managed.session_ready(
                call_id=self.session.call_id,
                agent_id=self.session.agent_id,
                agent_version_id=self.session.agent_version_id,
                input_format=self.input_format,
                output_delivery=self.output_delivery,
            )
        )
        self.emulator.report(f"session ready: call {self.session.call_id} ({self.input_format})")

    async def _fatal(
        self, problem: str, *, code: str = "invalid_event", close_code: int = 1008
    ) -> None:
        self.emulator.report(f"agent refuses an invalid event ({problem}): closing {close_code}")
        self.session.errors_sent.append(managed.Error(code=code, message=problem, fatal=True))
        try:
            await self.websocket.send_message(managed.error(code, problem, fatal=True))
        except trio_websocket.ConnectionClosed:
            return
        await self._close(close_code, problem)

    async def _refuse(self, problem: str) -> None:
        self.emulator.report(f"agent ignores an invalid event: {problem}")
        self.session.errors_sent.append(managed.Error("invalid_event", problem, fatal=False))
        await self.websocket.send_message(managed.error("invalid_event", problem, fatal=False))

    # ---- what the client sends -------------------------------------------------------------

    async def _on_message(self, message: str | bytes) -> bool:
        try:
            event = managed.parse_client_event(message)
        except CartesiaProtocolError as exc:
            if _is_client_event(message):
                await self._refuse(str(exc))
                return True
            await self._fatal(str(exc))
            return False
        self.session.events.append(event)
        if isinstance(event, managed.AudioInput):
            await self._audio_input(event.audio)
        elif isinstance(event, managed.DtmfInput):
            self._keyed(event.digit)
        elif isinstance(event, managed.ClientToolResult):
            if not self._tool_answered(event):
                await self._refuse(
                    f"no client_tool_call has tool_call_id {event.tool_call_id[:40]!r}"
                )
        else:
            await self._refuse("session_create was already received")
        return True

    async def _audio_input(self, payload: str) -> None:
        if not self.ready:
            self.session.audio_dropped_before_ready += 1
            return
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            await self._refuse("audio_input.audio is not valid base64")
            return
        self._hear(audio)

    # ---- what the agent sends --------------------------------------------------------------

    async def _say(self, step: Say) -> None:
        clip = self.emulator.clip(step.clip)
        chunks = self._chunks(step.clip)
        words = _WORD.findall(clip.text.strip())
        turn, started = self._next_turn(), self._now()
        tool_calls, self.unreported_tools = self.unreported_tools, []
        send = self.websocket.send_message
        await send(managed.turn_started(turn, "assistant", started))
        self.emulator.report(f"agent says: {clip.text}")
        spoken = 0

        async def words_due(index: int) -> None:
            # Each word goes out with the chunk it falls in: the words follow the speech.
            nonlocal spoken
            while spoken < len(words) and spoken * len(chunks) // len(words) <= index:
                await send(managed.turn_output_text_delta(turn, words[spoken]))
                spoken += 1

        paced = self.output_delivery == "speaking_pace"
        finished = await self._speak(
            chunks, interruptible=step.interruptible, paced=paced, on_chunk=words_due
        )
        if not finished:
            text = "".join(words[:spoken]).rstrip()
            await send(self._assistant_ended(turn, text, started, tool_calls, interrupted=True))
            return
        for word in words[spoken:]:  # only when the clip had no audio at all
            await send(managed.turn_output_text_delta(turn, word))
        text = "".join(words)
        await send(self._assistant_ended(turn, text, started, tool_calls, interrupted=False))

    def _assistant_ended(
        self,
        turn: int,
        text: str,
        started: float,
        tool_calls: list[dict[str, object]],
        *,
        interrupted: bool,
    ) -> str:
        return managed.turn_ended(
            turn,
            "assistant",
            text,
            interrupted=interrupted,
            start_time=started,
            end_time=self._now(),
            tool_calls=tool_calls,
        )

    async def _send_audio(self, chunk: bytes) -> None:
        await self.websocket.send_message(managed.audio_output(b64encode(chunk).decode("ascii")))

    async def _send_clear(self) -> None:
        await self.websocket.send_message(managed.audio_output_clear())

    async def _send_dtmf(self, digit: str) -> None:
        await self.websocket.send_message(managed.dtmf_output(digit))

    async def _send_tool_call(
        self, tool_call_id: str, name: str, parameters: Mapping[str, object]
    ) -> None:
        await self.websocket.send_message(
            managed.client_tool_call(tool_call_id, name, parameters, expects_response=True)
        )

    async def _transfer(self, step: Transfer) -> None:
        # Unreachable: the handshake refuses scripts with a transfer step.
        await self._fatal(TRANSFER_ON_MANAGED, code="agent_failed", close_code=1011)

    async def _user_turn_started(self, utterance: _Utterance) -> None:
        self.user_turn = self._next_turn()
        await self.websocket.send_message(
            managed.turn_started(self.user_turn, "user", utterance.started)
        )

    async def _user_turn_ended(self, utterance: _Utterance, transcript: str, ended: float) -> None:
        await self.websocket.send_message(
            managed.turn_ended(
                self.user_turn,
                "user",
                transcript,
                interrupted=False,
                start_time=utterance.started,
                end_time=ended,
            )
        )
