"""``FakeAgent`` and ``FakeAgentConnector``: the agent as memory channels (``AgentStream``).

The test plays the agent: it queues events (or an exception to raise) with the helpers, and
reads what Archer sent from ``received`` as ``("audio", payload)``, ``("dtmf", digit)`` or
``("tool_result", (tool_call_id, result, is_error))``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

from archer.call.events import (
    AgentAudio,
    AgentClear,
    AgentDtmf,
    AgentEvent,
    AgentHangup,
    ToolCallRequest,
    TurnEnded,
    TurnStarted,
    TurnTextDelta,
)
from archer.call.ports import AgentSession
from archer.errors import AgentUnavailableError

_EVENT_BUFFER = 1000


@attrs.define
class FakeAgent:
    agent_call_id: str = "ac_fake0001"
    #: Like a Managed agent (True) or a Line agent (False).
    reports_turns: bool = True
    #: Seconds before a ping is answered; ``math.inf`` never answers.
    ping_delay: float = 0.0
    #: When set, ``send_audio`` blocks forever, like a congested agent socket.
    stall_audio: bool = False
    received: list[tuple[str, object]] = attrs.Factory(list)
    pings: int = 0
    _send: trio.MemorySendChannel[AgentEvent | BaseException] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[AgentEvent | BaseException] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel["AgentEvent | BaseException"](
            _EVENT_BUFFER
        )

    # --- the port ------------------------------------------------------------------------------

    async def receive(self) -> AgentEvent:
        item = await self._receive.receive()
        if isinstance(item, BaseException):
            raise item
        return item

    async def send_audio(self, payload: str) -> None:
        if self.stall_audio:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self.received.append(("audio", payload))

    async def send_dtmf(self, digit: str) -> None:
        await trio.lowlevel.checkpoint()
        self.received.append(("dtmf", digit))

    async def send_tool_result(self, tool_call_id: str, result: str, *, is_error: bool) -> None:
        await trio.lowlevel.checkpoint()
        self.received.append(("tool_result", (tool_call_id, result, is_error)))

    async def ping(self) -> None:
        self.pings += 1
        if math.isinf(self.ping_delay):
            await trio.sleep_forever()
        await trio.sleep(self.ping_delay)

    # --- the agent (what the test uses) --------------------------------------------------------

    def emit(self, event: AgentEvent | BaseException) -> None:
        self._send.send_nowait(event)

    def say(self, payload: str) -> None:
        self.emit(AgentAudio(payload))

    def clear(self) -> None:
        self.emit(AgentClear())

    def dtmf(self, digit: str) -> None:
        self.emit(AgentDtmf(digit))

    def call_tool(
        self,
        tool_call_id: str,
        name: str,
        arguments: Mapping[str, object] | None = None,
        *,
        expects_response: bool = True,
    ) -> None:
        self.emit(ToolCallRequest(tool_call_id, name, dict(arguments or {}), expects_response))

    def turn(self, turn: int, role: str, text: str, *, interrupted: bool = False) -> None:
        """A whole turn: started, (for the agent) one delta per word, ended."""
        assert role in ("user", "assistant")
        self.emit(TurnStarted(turn, role, float(turn)))  # type: ignore[arg-type]
        if role == "assistant":
            for word in text.split(" "):
                self.emit(TurnTextDelta(turn, word + " "))
        self.emit(TurnEnded(turn, role, text, interrupted, float(turn), turn + 0.5))  # type: ignore[arg-type]

    def hang_up(self, reason: str = "call ended by agent") -> None:
        self.emit(AgentHangup(reason))

    def sent(self, kind: str) -> list[object]:
        return [value for sent_kind, value in self.received if sent_kind == kind]

    def speech(self) -> list[str]:
        """Caller audio received, leaving out the silence Archer fills Twilio's gaps with."""
        return [
            payload
            for payload in self.sent("audio")
            if isinstance(payload, str) and set(base64.b64decode(payload)) - {0xFF, 0x00}
        ]


@attrs.define
class FakeAgentConnector:
    """Hands out one ``FakeAgent``; or fails the way a real connector would."""

    agent: FakeAgent = attrs.Factory(FakeAgent)
    failure: AgentUnavailableError | None = None
    sessions: list[AgentSession] = attrs.Factory(list)
    closed: bool = False

    @asynccontextmanager
    async def open_session(self, session: AgentSession) -> AsyncIterator[FakeAgent]:
        await trio.lowlevel.checkpoint()
        self.sessions.append(session)
        if self.failure is not None:
            raise self.failure
        try:
            yield self.agent
        finally:
            self.closed = True
