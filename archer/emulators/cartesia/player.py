"""The protocol-neutral player of an agent script: one connection's state while its steps run.

Layer: emulator (trio, on one accepted WebSocket). ``ScriptedCall`` paces speech, hears the
caller (``EnergyVad`` on 20 ms frames), waits for digits and tool results, and runs the steps
of an ``AgentScript`` (``archer.emulators.cartesia.script``). The protocols subclass it:
``ManagedCall`` (``archer.emulators.cartesia.managed``) and ``LineCall``
(``archer.emulators.cartesia.line``) do the handshake, parse what the client sends and build
what the agent sends.

Rules: this module knows neither protocol nor the server that accepted the connection; what it
needs from the server is the small ``AgentHost`` interface below, which ``CartesiaEmulator``
(``archer.emulators.cartesia.server``) satisfies. The reader task and the script task share the
call's state; ``_changed`` wakes whoever waits on it. Adding a script step means a case in
``_run_step``; a protocol-specific step is an abstract method here.

Size (over 400 lines, on purpose): every step's timing (speech pacing, barge-in, listening,
digits, tool results) shares the state of one connection, and the two protocols rely on all of it.
"""

from __future__ import annotations

import abc
import collections
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

import attrs
import numpy as np
import trio
import trio_websocket

from archer.audio import g711
from archer.audio.vad import EnergyVad, SpeechStarted, VadEvent
from archer.emulators.cartesia.placeholders import substitute
from archer.emulators.cartesia.script import (
    AgentScript,
    CallTool,
    CollectDtmf,
    Listen,
    Pause,
    Say,
    SendDtmf,
    Step,
    Transfer,
)
from archer.emulators.cartesia.session import (
    Clip,
    EmulatedSession,
    EmulatedToolCall,
    ToolResult,
    chunk_bytes,
)

__all__ = ["CALL_ENDED_BY_AGENT", "AgentHost", "ScriptedCall", "Utterance", "shorten"]

#: The close reason (code 1000) when the agent hangs up, with ``", reason: ..."`` after it when
#: the agent gave one (reference §4: Line documents it; Managed documents no reason text).
CALL_ENDED_BY_AGENT: Final = "call ended by agent"
FRAME_SECONDS: Final = 0.02
#: A close handshake gets this long before the connection is dropped.
CLOSE_TIMEOUT: Final = 2.0
#: Cartesia replaces a larger result with a ``result_too_large`` error result.
MAX_TOOL_RESULT_BYTES: Final = 4096
_MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class AgentHost(Protocol):
    """What a session needs from the emulator that accepted it (``CartesiaEmulator``)."""

    @property
    def script(self) -> AgentScript: ...
    @property
    def session_create_timeout(self) -> float: ...
    @property
    def ready_delay(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...
    def report(self, line: str) -> None: ...
    def clip(self, name: str) -> Clip: ...
    def rendered(self, name: str, input_format: str) -> bytes: ...


def shorten(text: str, limit: int = 100) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis, for progress lines."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@attrs.define
class Utterance:
    """One stretch of caller speech, in session seconds (``ended`` is ``None`` while it lasts)."""

    started: float
    ended: float | None = None


@attrs.define
class ScriptedCall(abc.ABC):
    """One connection's state while its script plays; the reader and the script share it.

    Protocol-neutral: subclasses (``ManagedCall`` in ``archer.emulators.cartesia.managed``,
    ``LineCall`` in ``archer.emulators.cartesia.line``) do the handshake, parse what the client
    sends and build what the agent sends; this class paces speech, hears the caller, waits for
    digits and tool results, and runs the steps.
    """

    emulator: AgentHost
    websocket: trio_websocket.WebSocketConnection
    session: EmulatedSession
    input_format: str = "mulaw_8000"
    ready: bool = False
    turn: int = 0
    started_at: float = 0.0
    vad: EnergyVad = attrs.Factory(EnergyVad)
    pending_audio: bytearray = attrs.Factory(bytearray)
    #: Every stretch of caller speech, in order; ``listen`` hears each once.
    utterances: list[Utterance] = attrs.Factory(list)
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
    async def _user_turn_started(self, utterance: Utterance) -> None:  # noqa: B027
        """The caller began the utterance a ``listen`` hears (a protocol may announce it)."""

    async def _user_turn_ended(  # noqa: B027
        self, utterance: Utterance, transcript: str, ended: float
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

    def _take_session_variables(self, given: Mapping[str, object]) -> list[str]:
        """Store the script's session variables from what the session started with (as text,
        as a prompt sees them); the names the script needs that are missing."""
        missing = []
        for name in self.emulator.script.session_variables:
            if name not in given:
                missing.append(name)
                continue
            value = given[name]
            self.session.variables[name] = (
                value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            )
        return missing

    def _spoken(self, step: Say) -> str:
        """The words of a ``say``: its ``text`` with placeholders filled in, or the clip's."""
        if step.text is None:
            return self.emulator.clip(step.clip).text
        spoken = substitute(step.text, self.session.variables)
        assert isinstance(spoken, str)
        return spoken

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
            self.utterances.append(Utterance(started=at))
        else:
            self.utterances[-1].ended = at
        self._changed()

    def _keyed(self, digit: str) -> None:
        self.session.dtmf_digits.append(digit)
        self.digits.append(digit)
        self._changed()

    def _tool_answered(self, result: ToolResult) -> bool:
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
            await self._close(1000, f"{CALL_ENDED_BY_AGENT}{because}")
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
            if self.session.fail_mid_turn and index == len(chunks) // 2:
                self.session.fail_mid_turn = False  # once: the session is over anyway
                self.emulator.report("agent fails mid-turn (closes 1011)")
                await self._close(1011, "agent failed")
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
        parameters = substitute(dict(step.arguments), self.session.variables)
        assert isinstance(parameters, dict)
        self.session.tool_calls.append(EmulatedToolCall(tool_call_id, step.name, parameters))
        self.open_tool_calls.add(tool_call_id)
        self.emulator.report(f"agent calls {step.name}")
        await self._send_tool_call(tool_call_id, step.name, parameters)
        if step.lead_in is not None:
            await self._say(Say(step.lead_in, interruptible=False))
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
                self.emulator.report(f"{step.name} failed: {shorten(outcome)}")
            else:
                self.emulator.report(f"{step.name} returned: {shorten(outcome)}")
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
