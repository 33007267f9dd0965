"""Adapter: a quart-trio WebSocket carrying a Twilio media stream, as a ``TwilioStream`` port.

Layer: adapter. It parses and builds frames with ``archer.twilio.frames`` and knows nothing of
calls.

Rules: quart-trio reports a disconnect by cancelling the route, not by raising, so ``receive``
never sees the socket close; the route's shielded ``finally`` handles that case. Frames before
``start`` are consumed by ``wait_for_start``; a second ``start`` later is a protocol error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from archer.errors import TwilioProtocolError
from archer.twilio.frames import Connected, OutboundFrames, Start, TwilioEvent, parse_frame

if TYPE_CHECKING:
    from quart.wrappers import Websocket


@attrs.define
class QuartTwilioStream:
    """The Twilio side of one call over quart-trio's ``websocket``."""

    _websocket: Websocket
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
        await self._websocket.send(self._outbound.media(payload))

    async def send_mark(self, name: str) -> None:
        await self._websocket.send(self._outbound.mark(name))

    async def send_clear(self) -> None:
        await self._websocket.send(self._outbound.clear)

    @property
    def _outbound(self) -> OutboundFrames:
        if self._frames is None:
            raise RuntimeError("nothing can be sent before Twilio's start frame")
        return self._frames
