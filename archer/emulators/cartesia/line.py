"""The Line (Calls API) session of the Cartesia emulator: ``/agents/stream/{agent_id}``.

Layer: emulator. ``CartesiaEmulator`` (``archer.emulators.cartesia.server``) checks the upgrade
and hands a Line connection to ``LineCall``, which plays the same ``AgentScript`` as a Managed
session through the shared ``ScriptedCall`` (``archer.emulators.cartesia.player``); only the
wire differs. Every client message is read by ``line_messages`` and every message the agent sends
is written by ``line_wire``, both by hand from Cartesia's documents and the Line SDK's wire
models, never by Archer's codec.

Protocol rules followed (reference ../shared/reference/cartesia-agents.md §2.A, §4, §5.1, §8;
where Cartesia's behaviour is unknown the emulator is strict, to catch client bugs):

- ``start`` must be the first message, within ``session_create_timeout``: silence, any other
  event or a message that does not parse closes 1008 ``start must be the first message``.
- ``ack`` answers at once with the client's ``stream_id`` (or ``sid_`` + 16 hex), ``config``
  (``input_format``, ``voice_id`` if given) and ``agent`` (only if overrides were given). Audio
  arriving within ``ready_delay`` after it is dropped and counted, as on Managed.
- After ``start``: ``media_input`` is caller audio (a missing or different ``stream_id`` is
  tolerated); ``dtmf`` is a keyed digit; ``custom`` is a tool result when it carries
  ``archer_tool_result`` (Archer's convention), else recorded in ``custom_received``. A message
  that does not parse, or a second ``start``, closes 1008 with the problem (Line has no error
  event). A result for an id never issued is reported and ignored; a late one is ignored.
- No turn or transcript events (Line has none). ``say`` streams ``media_output`` in 20 ms
  chunks at speaking pace; caller speech stops an interruptible one with ``clear``. ``tool``
  sends Archer's ``custom`` tool call and waits for its answer as on Managed; ``dtmf`` sends
  ``dtmf``; ``transfer`` sends ``transfer_call`` in the shape the step names (hand-written);
  ``hang_up`` closes 1000 ``call ended by agent`` (``, reason: ...``).
- No client message for ``idle_timeout`` seconds closes 1000 ``connection idle timeout``.
  WebSocket pings are answered by trio-websocket but, unlike Cartesia's, do not reset the timer
  (the library does not surface them); Archer streams caller audio continuously anyway.
"""

from __future__ import annotations

import secrets
from base64 import b64encode
from collections.abc import Mapping
from typing import Final

import attrs
import trio

from archer.emulators.cartesia import line_wire
from archer.emulators.cartesia.client_messages import ClientMessageError
from archer.emulators.cartesia.line_messages import (
    Custom,
    Dtmf,
    MediaInput,
    Start,
    read_line_message,
    tool_result_of,
)
from archer.emulators.cartesia.player import ScriptedCall, shorten
from archer.emulators.cartesia.script import Say, Transfer
from archer.emulators.cartesia.session import ToolResult

__all__ = ["IDLE_TIMEOUT", "START_FIRST", "LineCall"]

#: The close reason (code 1008) when the first message is not a ``start`` in time.
START_FIRST: Final = "start must be the first message"
#: The close reason (code 1000) after ``idle_timeout`` without a client message (reference §4).
IDLE_TIMEOUT: Final = "connection idle timeout"


@attrs.define
class LineCall(ScriptedCall):
    """A Line session: ``start``/``ack``, ``media_output``, tools over ``custom`` events."""

    stream_id: str = ""

    # ---- handshake -------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        message: str | bytes | None = None
        timeout = self.emulator.session_create_timeout
        with trio.move_on_after(timeout):
            message = await self.websocket.get_message()
        if message is None:
            self.emulator.report(f"no start within {timeout:g} s: closing 1008")
            await self._close(1008, START_FIRST)
            return False
        try:
            event = read_line_message(message)
        except ClientMessageError as exc:
            self.emulator.report(f"agent refuses the first message ({exc}): closing 1008")
            await self._close(1008, START_FIRST)
            return False
        self.session.events.append(event)
        if not isinstance(event, Start):
            self.emulator.report(
                f"first message is {type(event).__name__}, not start: closing 1008"
            )
            await self._close(1008, START_FIRST)
            return False
        self.started_at = trio.current_time()
        self.stream_id = event.stream_id or "sid_" + secrets.token_hex(8)
        self.input_format = event.input_format
        self.session.stream_id, self.session.input_format = self.stream_id, event.input_format
        self.session.metadata = dict(event.metadata)
        missing = self._take_session_variables(event.metadata)
        if missing:
            # Line has no error event: an agent that cannot start closes the stream.
            problem = f"start metadata lacks {', '.join(missing)}"
            self.emulator.report(f"agent refuses the start ({problem}): closing 1008")
            await self._close(1008, problem)
            return False
        config: dict[str, object] = {"input_format": event.input_format}
        if event.voice_id is not None:
            config["voice_id"] = event.voice_id
        agent = {
            key: value
            for key, value in (
                ("introduction", event.introduction),
                ("system_prompt", event.system_prompt),
            )
            if value is not None
        }
        await self.websocket.send_message(line_wire.ack(self.stream_id, config, agent))
        self.emulator.report(f"stream started: {self.stream_id} ({self.input_format})")
        return True

    async def _become_ready(self) -> None:
        if self.emulator.ready_delay > 0:
            await trio.sleep(self.emulator.ready_delay)

    async def _next_message(self) -> str | bytes | None:
        idle = self.emulator.idle_timeout
        with trio.move_on_after(idle):
            return await self.websocket.get_message()
        self.emulator.report(f"no client message for {idle:g} s: closing 1000")
        await self._close(1000, IDLE_TIMEOUT)
        return None

    async def _violation(self, problem: str) -> bool:
        self.emulator.report(f"agent refuses an invalid event ({problem}): closing 1008")
        await self._close(1008, problem)
        return False

    # ---- what the client sends -------------------------------------------------------------

    async def _on_message(self, message: str | bytes) -> bool:
        try:
            event = read_line_message(message)
        except ClientMessageError as exc:
            return await self._violation(str(exc))
        self.session.events.append(event)
        if isinstance(event, MediaInput):
            if not self.ready:
                self.session.audio_dropped_before_ready += 1
            else:
                self._hear(event.audio)
        elif isinstance(event, Dtmf):
            self._keyed(event.digit)
        elif isinstance(event, Custom):
            return await self._custom(event.metadata)
        else:
            return await self._violation("start was already received")
        return True

    async def _custom(self, metadata: Mapping[str, object]) -> bool:
        try:
            answer = tool_result_of(metadata)
        except ClientMessageError as exc:
            return await self._violation(str(exc))
        if answer is None:
            self.session.custom_received.append(dict(metadata))
            self.emulator.report(f"agent receives custom metadata: {shorten(str(metadata))}")
            return True
        tool_call_id = answer.tool_call_id
        if not self._tool_answered(ToolResult(tool_call_id, answer.result, answer.is_error)):
            self.emulator.report(f"agent ignores a result for unknown tool call {tool_call_id!r}")
        return True

    # ---- what the agent sends --------------------------------------------------------------

    async def _say(self, step: Say) -> None:
        self.emulator.report(f"agent says: {self._spoken(step)}")
        await self._speak(self._chunks(step.clip), interruptible=step.interruptible)

    async def _send_audio(self, chunk: bytes) -> None:
        payload = b64encode(chunk).decode("ascii")
        await self.websocket.send_message(line_wire.media_output(self.stream_id, payload))

    async def _send_clear(self) -> None:
        await self.websocket.send_message(line_wire.clear(self.stream_id))

    async def _send_dtmf(self, digit: str) -> None:
        await self.websocket.send_message(line_wire.dtmf(self.stream_id, digit))

    async def _send_tool_call(
        self, tool_call_id: str, name: str, parameters: Mapping[str, object]
    ) -> None:
        await self.websocket.send_message(
            line_wire.tool_call(self.stream_id, tool_call_id, name, parameters)
        )

    async def _transfer(self, step: Transfer) -> None:
        self.emulator.report(f"agent asks to transfer to {step.target}")
        self.session.transfers.append(step.target)
        await self.websocket.send_message(line_wire.transfer_call(self.stream_id, step))
