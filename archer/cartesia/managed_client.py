"""Adapter: Cartesia's Managed Agents WebSocket as an ``AgentStream`` port, over trio-websocket.

Layer: adapter. Wire format from ``archer.cartesia.managed``; vocabulary from
``archer.call.events``.

Rules: every trio-websocket exception is mapped here (``ConnectionClosed`` →
``AgentClosedError`` or a clean ``AgentHangup``; handshake failures → ``AgentUnavailableError``
with the ``end_reason`` to record), so nothing above sees a library type. Unknown event types
are logged once each and ignored, as the protocol asks. The session is opened, readied and
closed by ``CartesiaManagedConnector.open_session``; closing is shielded and time-boxed.

Reference: ../shared/reference/cartesia-agents.md §1, §2.B, §4.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import attrs
import structlog
import trio_websocket

from archer.call.events import (
    AgentAudio,
    AgentClear,
    AgentDtmf,
    AgentEvent,
    AgentHangup,
    AgentNotice,
    ToolCallRequest,
    TurnEnded,
    TurnStarted,
    TurnTextDelta,
)
from archer.cartesia import managed
from archer.cartesia.connect import open_agent_socket
from archer.cartesia.drift import DriftLog
from archer.errors import AgentClosedError, AgentFatalError, AgentUnavailableError

if TYPE_CHECKING:
    from archer.call.ports import AgentSession

log = structlog.get_logger(__name__)


@attrs.frozen(kw_only=True)
class CartesiaManagedConnector:
    """Opens Managed Agents sessions for one agent (``AgentConnector``)."""

    ws_url: str
    agent_id: str
    api_key: str = attrs.field(repr=False)
    version: str
    ready_timeout: float
    max_message_bytes: int

    @property
    def url(self) -> str:
        # The version goes in the query: on Cartesia's WebSockets the query parameter wins.
        return (
            f"{self.ws_url}/v1/agents/websocket/{quote(self.agent_id, safe='')}"
            f"?cartesia_version={quote(self.version, safe='')}"
        )

    @asynccontextmanager
    async def open_session(self, session: AgentSession) -> AsyncIterator[ManagedAgentStream]:
        """Connect, send ``session_create``, wait for ``session_ready``; close on exit.

        Raises:
            AgentUnavailableError: unreachable, refused, or not ready in time (see
                ``archer.cartesia.connect``).

        Cancellation: the socket is closed (see ``archer.websocket_client``).
        """

        async def handshake(websocket: trio_websocket.WebSocketConnection) -> ManagedAgentStream:
            agent = ManagedAgentStream(websocket)
            await agent.start_session(session)
            return agent

        async with open_agent_socket(
            self.url,
            api_key=self.api_key,
            version=self.version,
            ready_timeout=self.ready_timeout,
            max_message_bytes=self.max_message_bytes,
            handshake=handshake,
            ready_event="session_ready",
        ) as agent:
            yield agent


@attrs.define
class ManagedAgentStream:
    """One ready Managed Agents session (``AgentStream``)."""

    _websocket: trio_websocket.WebSocketConnection
    _agent_call_id: str = ""
    _drift: DriftLog = attrs.Factory(DriftLog)

    @property
    def agent_call_id(self) -> str:
        return self._agent_call_id

    @property
    def reports_turns(self) -> bool:
        return True  # turn_started / turn_ended frame every agent answer

    async def start_session(self, session: AgentSession) -> None:
        """Send ``session_create`` and wait for ``session_ready`` (callers bound the wait).

        Raises:
            AgentUnavailableError: the agent refused the session or closed.
        """
        await self._send_or_unavailable(
            managed.session_create(
                input_format=session.audio_format,
                dynamic_variables={
                    "call_sid": session.call_sid,
                    "caller_number": session.caller_number,
                    # Always present, so an agent prompt that names it never fails to start.
                    "customer_id": "" if session.customer_id is None else str(session.customer_id),
                    # An outbound call's purpose and payment facts (none for inbound calls).
                    **session.facts,
                    **session.extra_variables,
                },
            )
        )
        while True:
            try:
                message = await self._websocket.get_message()
            except trio_websocket.ConnectionClosed as closed:
                raise AgentUnavailableError(
                    f"agent closed before session_ready: {_describe(closed)}",
                    end_reason="agent_rejected",
                ) from None
            event = managed.parse_server_event(message)
            if isinstance(event, managed.SessionReady):
                self._agent_call_id = event.call_id
                return
            if isinstance(event, managed.Error):
                raise AgentUnavailableError(
                    f"agent refused the session: {event.code}: {event.message}",
                    end_reason="agent_rejected",
                )
            # Anything else before session_ready is noise the protocol does not send.
            log.warning("agent.event_before_ready", event=type(event).__name__)

    async def receive(self) -> AgentEvent:
        """The next agent event (see ``archer.call.ports.AgentStream``)."""
        while True:
            try:
                message = await self._websocket.get_message()
            except trio_websocket.ConnectionClosed as closed:
                if closed.reason is not None and closed.reason.code == 1000:
                    return AgentHangup(closed.reason.reason or "")
                raise AgentClosedError(
                    closed.reason.code if closed.reason else None,
                    closed.reason.reason if closed.reason else None,
                ) from None
            event = managed.parse_server_event(message, self._drift.pending)
            if self._drift.pending:
                self._drift.flush()
            match event:
                case managed.AudioOutput(audio=audio):
                    return AgentAudio(audio)
                case managed.AudioOutputClear():
                    return AgentClear()
                case managed.TurnOutputTextDelta(turn=turn, text=text):
                    return TurnTextDelta(turn, text)
                case managed.TurnStarted(turn=turn, role=role, start_time=start_time):
                    return TurnStarted(turn, _role(role), start_time)
                case managed.TurnEnded():
                    return TurnEnded(
                        turn=event.turn,
                        role=_role(event.role),
                        text=event.text,
                        interrupted=event.interrupted,
                        start_time=event.start_time,
                        end_time=event.end_time,
                    )
                case managed.ClientToolCall():
                    return ToolCallRequest(
                        tool_call_id=event.tool_call_id,
                        name=event.tool_name,
                        arguments=event.parameters,
                        expects_response=event.expects_response,
                    )
                case managed.DtmfOutput(digit=digit):
                    return AgentDtmf(digit)
                case managed.Error(code=code, message=text, fatal=True):
                    raise AgentFatalError(code, text)
                case managed.Error(code=code, message=text):
                    return AgentNotice(code, text)
                case managed.SessionReady():
                    log.warning("agent.duplicate_session_ready")
                case managed.Unknown(type=kind):
                    self._drift.unknown_event(kind)

    async def send_audio(self, payload: str) -> None:
        await self._send(managed.audio_input(payload))

    async def send_dtmf(self, digit: str) -> None:
        await self._send(managed.dtmf_input(digit))

    async def send_tool_result(self, tool_call_id: str, result: str, *, is_error: bool) -> None:
        await self._send(managed.client_tool_result(tool_call_id, result, is_error=is_error))

    async def ping(self) -> None:
        try:
            await self._websocket.ping()
        except trio_websocket.ConnectionClosed as closed:
            raise _closed_error(closed) from None

    async def _send(self, message: str) -> None:
        try:
            await self._websocket.send_message(message)
        except trio_websocket.ConnectionClosed as closed:
            raise _closed_error(closed) from None

    async def _send_or_unavailable(self, message: str) -> None:
        try:
            await self._websocket.send_message(message)
        except trio_websocket.ConnectionClosed as closed:
            raise AgentUnavailableError(
                f"agent closed during the handshake: {_describe(closed)}",
                end_reason="agent_rejected",
            ) from None


def _role(role: str) -> Literal["user", "assistant"]:
    return "user" if role == "user" else "assistant"


def _closed_error(closed: trio_websocket.ConnectionClosed) -> AgentClosedError:
    reason = closed.reason
    return AgentClosedError(reason.code if reason else None, reason.reason if reason else None)


def _describe(closed: trio_websocket.ConnectionClosed) -> str:
    reason = closed.reason
    return f"code={reason.code} reason={reason.reason or ''}" if reason else "no close frame"
