"""Adapter: a Cartesia Line agent over the Calls API WebSocket, as an ``AgentStream`` port.

Layer: adapter. Wire format from ``archer.cartesia.line``; vocabulary from
``archer.call.events`` — the same nouns as the Managed Agents client, so the call cannot tell
which protocol it talks to.

Rules (../shared/reference/cartesia-agents.md §2.A, §4, §5.1):
- ``start`` carries the input format, the caller's numbers, the CallSid and customer id, and the
  optional overrides from settings; the session is ready at ``ack``, whose ``stream_id`` is
  echoed on every event after it.
- Line agents run their own tools; a banking tool is asked for over ``custom`` events
  (``{"archer_tool": name, "id", "arguments"}``) and answered the same way. Other ``custom``
  data is recorded on the call; ``transfer_call`` becomes a transfer request.
- Close 1000 "call ended by agent…" is a hang-up; "connection idle timeout" is recorded as its
  own end. Anything else is an abnormal close.
- The docs disagree on the format of ``media_output``; a setting names it, and a byte rate far
  above that format's (audio arrives at speaking pace) is logged once, with the fix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import attrs
import structlog
import trio
import trio_websocket

from archer.call.events import (
    AgentAudio,
    AgentClear,
    AgentCustom,
    AgentDtmf,
    AgentEvent,
    AgentHangup,
    AgentNotice,
    AgentTransfer,
    ToolCallRequest,
)
from archer.call.session_facts import as_metadata
from archer.cartesia import line
from archer.cartesia.connect import open_agent_socket
from archer.cartesia.drift import DriftLog
from archer.errors import AgentClosedError, AgentIdleError, AgentUnavailableError

if TYPE_CHECKING:
    from archer.call.ports import AgentSession

log = structlog.get_logger(__name__)

#: Bytes per second of each agent audio format at speaking pace.
BYTE_RATES: Final = {"mulaw_8000": 8000, "pcm_16000": 32000, "pcm_24000": 48000, "pcm_44100": 88200}
#: Output checked after this much wall time of agent audio; more than 1.5× the expected rate
#: cannot be speaking pace, so the format must be another one.
_RATE_CHECK_SECONDS: Final = 3.0
_RATE_TOLERANCE: Final = 1.5


@attrs.frozen(kw_only=True)
class CartesiaLineConnector:
    """Opens Calls API sessions for one Line agent (``AgentConnector``)."""

    ws_url: str
    agent_id: str
    api_key: str = attrs.field(repr=False)
    version: str
    ready_timeout: float
    max_message_bytes: int
    output_format: str = ""
    voice_id: str = ""
    introduction: str = ""
    system_prompt: str = ""

    @property
    def url(self) -> str:
        return (
            f"{self.ws_url}/agents/stream/{quote(self.agent_id, safe='')}"
            f"?cartesia_version={quote(self.version, safe='')}"
        )

    @asynccontextmanager
    async def open_session(self, session: AgentSession) -> AsyncIterator[LineAgentStream]:
        """Connect, send ``start``, wait for ``ack``; close on exit.

        Raises:
            AgentUnavailableError: unreachable, refused, or not ready in time.

        Cancellation: the socket is closed (see ``archer.websocket_client``).
        """

        customer = "" if session.customer_id is None else str(session.customer_id)

        async def handshake(websocket: trio_websocket.WebSocketConnection) -> LineAgentStream:
            agent = LineAgentStream(
                websocket, output_format=self.output_format or session.audio_format
            )
            await agent.start(
                line.start(
                    input_format=session.audio_format,
                    metadata={
                        "from": session.caller_number,
                        "call_sid": session.call_sid,
                        "customer_id": customer,
                        # An outbound call's purpose and payment facts, as strings.
                        **as_metadata(session.facts),
                        **session.extra_variables,
                    },
                    voice_id=self.voice_id or None,
                    introduction=self.introduction or None,
                    system_prompt=self.system_prompt or None,
                )
            )
            return agent

        async with open_agent_socket(
            self.url,
            api_key=self.api_key,
            version=self.version,
            ready_timeout=self.ready_timeout,
            max_message_bytes=self.max_message_bytes,
            handshake=handshake,
            ready_event="ack",
        ) as agent:
            yield agent


@attrs.define
class LineAgentStream:
    """One acknowledged Calls API session (``AgentStream``)."""

    _websocket: trio_websocket.WebSocketConnection
    output_format: str
    _stream_id: str = ""
    _drift: DriftLog = attrs.Factory(DriftLog)
    _audio_started: float | None = None
    _audio_bytes: int = 0
    _rate_checked: bool = False

    @property
    def agent_call_id(self) -> str:
        return self._stream_id

    @property
    def reports_turns(self) -> bool:
        return False  # the Calls API has no turn events: audio after a clear is the new answer

    async def start(self, start_message: str) -> None:
        """Send ``start`` and wait for ``ack`` (callers bound the wait).

        Raises:
            AgentUnavailableError: the agent closed or refused instead of acknowledging.
        """
        try:
            await self._websocket.send_message(start_message)
            while True:
                event = line.parse_server_event(await self._websocket.get_message())
                if isinstance(event, line.Ack):
                    self._stream_id = event.stream_id
                    return
                if isinstance(event, line.Error):
                    raise AgentUnavailableError(
                        f"agent refused the stream: {event.code}: {event.message}",
                        end_reason="agent_rejected",
                    )
                log.warning("agent.event_before_ack", event=type(event).__name__)
        except trio_websocket.ConnectionClosed as closed:
            raise AgentUnavailableError(
                f"agent closed before ack: {_describe(closed)}", end_reason="agent_rejected"
            ) from None

    async def receive(self) -> AgentEvent:
        """The next agent event (see ``archer.call.ports.AgentStream``)."""
        while True:
            try:
                message = await self._websocket.get_message()
            except trio_websocket.ConnectionClosed as closed:
                return _closing_event(closed)
            event = line.parse_server_event(message, self._drift.pending)
            if self._drift.pending:
                self._drift.flush()
            match event:
                case line.MediaOutput(payload=payload):
                    self._measure(payload)
                    return AgentAudio(payload)
                case line.Clear():
                    return AgentClear()
                case line.Dtmf(digit=digit):
                    return AgentDtmf(digit)
                case line.Custom(metadata=metadata):
                    request = line.tool_request(metadata)
                    if request is None:
                        return AgentCustom(metadata)
                    return ToolCallRequest(
                        tool_call_id=request.tool_call_id,
                        name=request.name,
                        arguments=request.arguments,
                        expects_response=True,
                    )
                case line.TransferCall(target=target, problem=problem):
                    if problem is not None:
                        log.warning("agent.transfer_target_unusable", problem=problem)
                    return AgentTransfer(target)
                case line.Error(message=text, code=code):
                    return AgentNotice(code, text)
                case line.Ack():
                    log.warning("agent.duplicate_ack")
                case line.Unknown(event=kind):
                    self._drift.unknown_event(kind)

    async def send_audio(self, payload: str) -> None:
        await self._send(line.media_input(self._stream_id, payload))

    async def send_dtmf(self, digit: str) -> None:
        await self._send(line.dtmf(self._stream_id, digit))

    async def send_tool_result(self, tool_call_id: str, result: str, *, is_error: bool) -> None:
        await self._send(line.tool_result(self._stream_id, tool_call_id, result, is_error=is_error))

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

    def _measure(self, payload: str) -> None:
        """Compare agent audio's byte rate with its configured format, once (cheap per chunk)."""
        if self._rate_checked:
            return
        now = trio.current_time()
        if self._audio_started is None:
            self._audio_started = now
        self._audio_bytes += len(payload) * 3 // 4
        elapsed = now - self._audio_started
        if elapsed < _RATE_CHECK_SECONDS:
            return
        self._rate_checked = True
        rate = self._audio_bytes / elapsed
        expected = BYTE_RATES.get(self.output_format, 0)
        if expected and rate > expected * _RATE_TOLERANCE:
            likely = min(BYTE_RATES, key=lambda name: abs(BYTE_RATES[name] - rate))
            log.warning(
                "agent.output_format_mismatch",
                configured=self.output_format,
                bytes_per_second=round(rate),
                fix=f"set CARTESIA_LINE_OUTPUT_FORMAT={likely}",
            )


def _closing_event(closed: trio_websocket.ConnectionClosed) -> AgentHangup:
    reason = closed.reason
    if reason is not None and reason.code == 1000:
        text = reason.reason or ""
        if text.startswith(line.IDLE_TIMEOUT):
            raise AgentIdleError(f"agent closed the session: {text}")
        return AgentHangup(text)
    raise _closed_error(closed)


def _closed_error(closed: trio_websocket.ConnectionClosed) -> AgentClosedError:
    reason = closed.reason
    return AgentClosedError(reason.code if reason else None, reason.reason if reason else None)


def _describe(closed: trio_websocket.ConnectionClosed) -> str:
    reason = closed.reason
    return f"code={reason.code} reason={reason.reason or ''}" if reason else "no close frame"
