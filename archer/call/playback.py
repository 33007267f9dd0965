"""What the caller has actually heard of the agent, as Twilio's mark echoes tell it.

Layer: call. Owned by one call; touched only on the trio thread.

Rules (../shared/reference/twilio-media-streams.md §3.4): a mark sent after some audio comes
back once that audio has played. On a clear, Twilio drops its buffer and echoes every pending
mark at once: those were discarded, not heard. So ``interrupt()`` settles every pending mark as
*not heard* the moment Archer decides to clear, and the echoes that follow are ignored. Every
clear also starts a new epoch; audio and marks queued under an older epoch are never sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

#: After a lead-in's last mark comes back, wait this long for more of it before calling it done
#: (the agent may still be streaming the end of the sentence).
SETTLE_SECONDS: Final = 0.4


@attrs.define
class _PendingMark:
    epoch: int
    settled: trio.Event = attrs.Factory(trio.Event)
    heard: bool = False


PlaceMark = Callable[[str, int], Awaitable[None]]


@attrs.define
class Playback:
    """The epoch of the current stretch of agent speech, and the marks still in flight."""

    epoch: int = 0
    #: Agent audio chunks queued for the caller so far (all epochs).
    chunks_queued: int = 0
    _pending: dict[str, _PendingMark] = attrs.Factory(dict)
    _marks_made: int = 0
    _arrival: trio.Event | None = None

    def audio_queued(self) -> None:
        """Agent audio was queued for the caller (called per chunk: constant time, no alloc)."""
        self.chunks_queued += 1
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    def interrupt(self) -> None:
        """The caller barged in: start a new epoch; nothing pending was heard."""
        self.epoch += 1
        for pending in self._pending.values():
            pending.settled.set()
        self._pending.clear()

    def mark_echoed(self, name: str) -> None:
        """Twilio echoed ``name``: the audio before it has played (unless already cleared)."""
        pending = self._pending.pop(name, None)
        if pending is not None:
            pending.heard = True
            pending.settled.set()

    def _new_mark(self) -> tuple[str, _PendingMark]:
        self._marks_made += 1
        name = f"archer-{self.epoch}-{self._marks_made}"
        pending = self._pending[name] = _PendingMark(self.epoch)
        return name, pending

    async def wait_until_heard(self, place_mark: PlaceMark, *, since_epoch: int) -> bool:
        """Wait until everything the agent has queued so far has played to the caller.

        ``place_mark(name, epoch)`` must queue a Twilio mark behind the audio already queued.
        Returns False if the caller has interrupted (a clear) at any point since
        ``since_epoch`` — the epoch when the request to wait was made — before the end is heard.

        Cancellation: the pending mark is forgotten when it is echoed or cleared.
        """
        while True:
            if self.epoch != since_epoch:
                return False
            chunks_before = self.chunks_queued
            name, pending = self._new_mark()
            await place_mark(name, pending.epoch)
            await pending.settled.wait()
            if not pending.heard:
                return False
            if self.chunks_queued != chunks_before:
                continue  # more speech was queued behind the mark: wait for that too
            self._arrival = arrival = trio.Event()
            with trio.move_on_after(SETTLE_SECONDS):
                await arrival.wait()
            if self.epoch != pending.epoch:
                return False
            if self.chunks_queued == chunks_before:
                return True
