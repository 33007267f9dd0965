"""``FakeTwilio``: the caller's media stream as memory channels (a ``TwilioStream``).

The test plays the caller with ``speak``/``press``/``stop``/``hang_up``; everything Archer sends
lands in ``outbound`` in order, as ``("media", payload)``, ``("mark", name)`` or
``("clear", "")``. ``hold_playback`` makes ``send_media`` block, like a congested socket.
"""

from __future__ import annotations

import attrs
import trio

from archer.errors import TwilioProtocolError
from archer.twilio.frames import Dtmf, Mark, Media, Stop, TwilioEvent

# The caller side is driven by the test, which never waits on Archer to push a frame.
_INBOUND_BUFFER = 1000


@attrs.define
class FakeTwilio:
    outbound: list[tuple[str, str]] = attrs.Factory(list)
    _inbound_send: trio.MemorySendChannel[TwilioEvent | TwilioProtocolError] = attrs.field(
        init=False
    )
    _inbound_receive: trio.MemoryReceiveChannel[TwilioEvent | TwilioProtocolError] = attrs.field(
        init=False
    )
    _playback_open: trio.Event = attrs.Factory(trio.Event)
    _chunk: int = 0

    def __attrs_post_init__(self) -> None:
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[
            "TwilioEvent | TwilioProtocolError"
        ](_INBOUND_BUFFER)
        self._playback_open.set()

    # --- the port (what Archer uses) -------------------------------------------------------

    async def receive(self) -> TwilioEvent:
        item = await self._inbound_receive.receive()
        if isinstance(item, TwilioProtocolError):
            raise item
        return item

    async def send_media(self, payload: str) -> None:
        await self._playback_open.wait()
        self.outbound.append(("media", payload))

    async def send_mark(self, name: str) -> None:
        await trio.lowlevel.checkpoint()
        self.outbound.append(("mark", name))

    async def send_clear(self) -> None:
        await trio.lowlevel.checkpoint()
        self.outbound.append(("clear", ""))

    # --- the caller (what the test uses) -----------------------------------------------------

    def speak(self, payload: str) -> None:
        self._chunk += 1
        self._inbound_send.send_nowait(
            Media(payload, timestamp=20 * self._chunk, chunk=self._chunk)
        )

    def press(self, digit: str) -> None:
        self._inbound_send.send_nowait(Dtmf(digit))

    def echo_mark(self, name: str) -> None:
        self._inbound_send.send_nowait(Mark(name))

    def garble(self, reason: str = "not JSON") -> None:
        self._inbound_send.send_nowait(TwilioProtocolError(reason))

    def stop(self) -> None:
        self._inbound_send.send_nowait(Stop(call_sid="CAfake"))

    def hang_up(self) -> None:
        """The socket goes away without a ``stop`` frame."""
        self._inbound_send.close()

    def hold_playback(self) -> None:
        self._playback_open = trio.Event()

    def release_playback(self) -> None:
        self._playback_open.set()

    def sent(self, kind: str) -> list[str]:
        return [value for sent_kind, value in self.outbound if sent_kind == kind]
