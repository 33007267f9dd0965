"""Adapter: a WebSocket carrying a Twilio media stream, as a ``TwilioStream`` port.

Layer: adapter. It parses and builds frames with ``archer.twilio.frames`` and knows nothing of
calls. Two sockets carry streams: quart-trio's (the ``/ws/cartesia`` route on the HTTP port) and
``archer.websocket_stream`` (the dedicated media listener, ``MEDIA_PORT``).

Rules: frames before ``start`` are consumed by ``wait_for_start``; a second ``start`` later is a
protocol error. How a closed socket shows differs by socket:
- quart-trio reports a disconnect by cancelling the route, not by raising, so
  ``TwilioMediaStream.receive`` never sees the socket close; the route's shielded ``finally``
  handles that case.
- ``SocketTwilioStream.receive`` raises ``trio.EndOfChannel``, as the port asks; its sends on a
  closed socket do nothing, because the reader reports the end (a writer must not turn a
  hang-up into a failed call).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import attrs
import trio

from archer.errors import TwilioProtocolError
from archer.twilio.frames import Connected, OutboundFrames, Start, TwilioEvent, parse_frame
from archer.websocket_stream import WebSocketClosed


class _MessageSocket(Protocol):
    async def receive(self) -> str | bytes | None: ...

    async def send(self, message: str) -> None: ...


@attrs.define
class TwilioMediaStream:
    """The Twilio side of one call over a message socket: quart-trio's ``websocket`` as is."""

    _websocket: _MessageSocket
    _frames: OutboundFrames | None = None

    async def wait_for_start(self) -> Start:
        """Consume ``connected`` and return the ``start`` frame.

        Raises:
            TwilioProtocolError: anything else arrived first, or a frame was malformed.

        Cancellation: the socket is left as it was; frames read so far are gone.
        """
        while True:
            frame = parse_frame(await self._websocket.receive())
            if isinstance(frame, Start):
                self._frames = OutboundFrames(frame.stream_sid)
                return frame
            if not isinstance(frame, Connected):
                raise TwilioProtocolError(f"{type(frame).__name__.lower()} before start")

    async def receive(self) -> TwilioEvent:
        """The next frame after ``start`` (see ``archer.call.ports.TwilioStream``)."""
        frame = parse_frame(await self._websocket.receive())
        if isinstance(frame, Connected | Start):
            raise TwilioProtocolError(f"unexpected {type(frame).__name__.lower()} mid-stream")
        return frame

    async def send_media(self, payload: str) -> None:
        await self._send(self._outbound.media(payload))

    async def send_mark(self, name: str) -> None:
        await self._send(self._outbound.mark(name))

    async def send_clear(self) -> None:
        await self._send(self._outbound.clear)

    async def _send(self, message: str) -> None:
        await self._websocket.send(message)

    @property
    def _outbound(self) -> OutboundFrames:
        if self._frames is None:
            raise RuntimeError("nothing can be sent before Twilio's start frame")
        return self._frames


@attrs.define
class SocketTwilioStream(TwilioMediaStream):
    """The Twilio side of one call over ``archer.websocket_stream`` (the media listener).

    Built with a ``WebSocketStream``, whose ``WebSocketClosed`` is mapped here.
    """

    async def wait_for_start(self) -> Start:
        try:
            return await super().wait_for_start()
        except WebSocketClosed as closed:
            raise TwilioProtocolError(f"the socket closed before start ({closed.code})") from None

    async def receive(self) -> TwilioEvent:
        try:
            return await super().receive()
        except WebSocketClosed:
            raise trio.EndOfChannel from None

    async def _send(self, message: str) -> None:
        with contextlib.suppress(WebSocketClosed):
            await self._websocket.send(message)
