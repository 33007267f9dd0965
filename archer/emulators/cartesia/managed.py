"""The Managed Agents session of the Cartesia emulator (``/v1/agents/websocket/{agent_id}``).

Layer: emulator (trio, on one accepted WebSocket). ``ManagedCall`` is the Managed wire on top of
the protocol-neutral ``ScriptedCall`` (``archer.emulators.cartesia.player``). Every client message
is read by ``managed_messages`` and every message the agent sends is written by ``managed_wire``,
both by hand from Cartesia's documents, never by Archer's own Managed codec.

Managed rules followed (reference ../shared/reference/cartesia-agents.md §2.B, §4, §8):

- ``session_create`` must be the first message, within ``session_create_timeout``; silence
  closes 1008. Any other first event, or one ``read_managed_message`` refuses (unknown fields
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

import binascii
import re
from collections.abc import Mapping
from typing import Final

import attrs
import trio
import trio_websocket

from archer.emulators.cartesia import managed_wire
from archer.emulators.cartesia.client_messages import ClientMessageError
from archer.emulators.cartesia.managed_messages import (
    AudioInput,
    ClientToolResult,
    DtmfInput,
    SessionCreate,
    read_managed_message,
)
from archer.emulators.cartesia.managed_wire import SentError
from archer.emulators.cartesia.player import ScriptedCall, Utterance
from archer.emulators.cartesia.script import Say, Transfer
from archer.emulators.cartesia.session import ToolResult

__all__ = ["TRANSFER_ON_MANAGED", "ManagedCall"]

_WORD: Final = re.compile(r"\S+\s*")
TRANSFER_ON_MANAGED: Final = (
    "transfer is a Line step; managed agents use the transfer_to_human tool"
)


@attrs.define
class ManagedCall(ScriptedCall):
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
            event = read_managed_message(message)
        except ClientMessageError as exc:
            # Cartesia names bad variables with their own code; they too prevent the start.
            await self._fatal(str(exc), code=exc.code)
            return False
        self.session.events.append(event)
        if not isinstance(event, SessionCreate):
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
        missing = self._take_session_variables(event.dynamic_variables)
        if missing:
            # What Cartesia answers when the agent's prompt names a variable it was not given.
            await self._fatal(
                f"dynamic_variables lacks {', '.join(missing)}", code="missing_dynamic_variables"
            )
            return False
        return True

    async def _become_ready(self) -> None:
        if self.emulator.ready_delay > 0:
            await trio.sleep(self.emulator.ready_delay)
        await self.websocket.send_message(
            managed_wire.session_ready(
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
        sent = SentError(code=code, message=problem, fatal=True)
        self.session.errors_sent.append(sent)
        try:
            await self.websocket.send_message(managed_wire.error(sent))
        except trio_websocket.ConnectionClosed:
            return
        await self._close(close_code, problem)

    async def _refuse(self, problem: str) -> None:
        self.emulator.report(f"agent ignores an invalid event: {problem}")
        sent = SentError("invalid_event", problem, fatal=False)
        self.session.errors_sent.append(sent)
        await self.websocket.send_message(managed_wire.error(sent))

    # ---- what the client sends -------------------------------------------------------------

    async def _on_message(self, message: str | bytes) -> bool:
        try:
            event = read_managed_message(message)
        except ClientMessageError as exc:
            # A client event badly filled in is ignored; anything else ends the session.
            if exc.event is not None:
                await self._refuse(str(exc))
                return True
            await self._fatal(str(exc))
            return False
        self.session.events.append(event)
        if isinstance(event, AudioInput):
            await self._audio_input(event.audio)
        elif isinstance(event, DtmfInput):
            self._keyed(event.digit)
        elif isinstance(event, ClientToolResult):
            answer = ToolResult(event.tool_call_id, event.result, event.is_error, event.error_type)
            if not self._tool_answered(answer):
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
        said = self._spoken(step)
        chunks = self._chunks(step.clip)
        words = _WORD.findall(said.strip())
        turn, started = self._next_turn(), self._now()
        tool_calls, self.unreported_tools = self.unreported_tools, []
        send = self.websocket.send_message
        await send(managed_wire.turn_started(turn, "assistant", started))
        self.emulator.report(f"agent says: {said}")
        spoken = 0

        async def words_due(index: int) -> None:
            # Each word goes out with the chunk it falls in: the words follow the speech.
            nonlocal spoken
            while spoken < len(words) and spoken * len(chunks) // len(words) <= index:
                await send(managed_wire.turn_output_text_delta(turn, words[spoken]))
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
            await send(managed_wire.turn_output_text_delta(turn, word))
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
        return managed_wire.turn_ended(
            turn,
            "assistant",
            text,
            interrupted=interrupted,
            start_time=started,
            end_time=self._now(),
            tool_calls=tool_calls,
        )

    async def _send_audio(self, chunk: bytes) -> None:
        await self.websocket.send_message(managed_wire.audio_output(chunk))

    async def _send_clear(self) -> None:
        await self.websocket.send_message(managed_wire.audio_output_clear())

    async def _send_dtmf(self, digit: str) -> None:
        await self.websocket.send_message(managed_wire.dtmf_output(digit))

    async def _send_tool_call(
        self, tool_call_id: str, name: str, parameters: Mapping[str, object]
    ) -> None:
        await self.websocket.send_message(
            managed_wire.client_tool_call(tool_call_id, name, parameters, expects_response=True)
        )

    async def _transfer(self, step: Transfer) -> None:
        # Unreachable: the handshake refuses scripts with a transfer step.
        await self._fatal(TRANSFER_ON_MANAGED, code="agent_failed", close_code=1011)

    async def _user_turn_started(self, utterance: Utterance) -> None:
        self.user_turn = self._next_turn()
        await self.websocket.send_message(
            managed_wire.turn_started(self.user_turn, "user", utterance.started)
        )

    async def _user_turn_ended(self, utterance: Utterance, transcript: str, ended: float) -> None:
        await self.websocket.send_message(
            managed_wire.turn_ended(
                self.user_turn,
                "user",
                transcript,
                interrupted=False,
                start_time=utterance.started,
                end_time=ended,
            )
        )
