"""What the caller has actually heard of the agent, as Twilio's mark echoes tell it.

Layer: call. Owned by one call; touched only on the trio thread, never across an ``await``.

Who writes what (trio's rule: one task owns a piece of state; the others wait on an event it
sets). The agent reader (``receive_from_agent``) owns the stretch of speech: ``epoch``, ``turn``,
``turn_ms``, ``gated``, ``chunks_queued``, ``stale_chunks``; it is the only caller of
``start_turn``, ``open_gate``, ``audio_queued`` and ``interrupt``. The marks in flight are one
table with one rule: a task that sends a mark registers it (``progress_mark`` from the Twilio
writer, ``wait_until_heard`` for a tool), the Twilio reader settles it (``mark_echoed``), a clear
settles them all; each mark carries its own ``settled`` event, and each waiting tool its own
``arrival`` event, so any number of tools can wait at once without one taking another's wake-up.

Rules (../shared/reference/twilio-media-streams.md §3.4): a mark sent after some audio comes
back once that audio has played. On a clear, Twilio drops its buffer and echoes every pending
mark at once: those were discarded, not heard. So ``interrupt()`` settles every pending mark as
*not heard* the moment Archer decides to clear, and the echoes that follow are ignored.

- Every clear starts a new epoch; audio and marks queued under an older epoch are never sent.
- After a clear, audio of the interrupted turn that is still arriving is dropped: the gate
  opens again when the agent starts a new turn, or when the caller's turn ends (whatever the
  agent says next is an answer, not the rest of the old one).
- Progress marks go out behind the agent's audio every ``MARK_INTERVAL_MS`` of a turn and at its
  end; each carries how much of the turn had been queued, so an echo says how much was heard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

#: After a lead-in's last mark comes back, wait this long for more of it before calling it done
#: (the agent may still be streaming the end of the sentence).
SETTLE_SECONDS: Final = 0.4
#: A progress mark follows this much of a turn's audio: the resolution of ``heard_ms``, at the
#: cost of one small Twilio message per 100 ms of agent speech.
MARK_INTERVAL_MS: Final = 100


@attrs.define
class _PendingMark:
    epoch: int
    #: For progress marks: the agent turn and how many ms of it precede the mark.
    turn: int | None = None
    turn_ms: int = 0
    settled: trio.Event = attrs.Factory(trio.Event)
    heard: bool = False


@attrs.frozen(slots=True)
class Heard:
    """An echoed progress mark: the caller has heard ``ms`` milliseconds of agent turn ``turn``."""

    turn: int
    ms: int


PlaceMark = Callable[[str, int], Awaitable[None]]


@attrs.define
class Playback:
    """The epoch of the current stretch of agent speech, and the marks still in flight."""

    #: Drop the rest of an interrupted turn until the next one starts (only for agents that
    #: announce their turns; without turn events, audio after a clear is the new answer).
    gate_after_clear: bool = True
    epoch: int = 0
    #: Agent audio chunks queued for the caller so far (all epochs).
    chunks_queued: int = 0
    #: The agent turn whose audio is arriving (None before the agent's first turn).
    turn: int | None = None
    #: Milliseconds of the current turn's audio queued so far.
    turn_ms: int = 0
    #: True from a clear until a new agent turn (or the end of the caller's turn).
    gated: bool = False
    #: Chunks of interrupted turns dropped at the gate.
    stale_chunks: int = 0
    _pending: dict[str, _PendingMark] = attrs.Factory(dict)
    _marks_made: int = 0
    #: One event per tool settling on a heard lead-in: set when more agent audio is queued.
    _arrival_waiters: set[trio.Event] = attrs.Factory(set)

    def start_turn(self, turn: int) -> None:
        """The agent started turn ``turn``: its audio is welcome again."""
        self.turn, self.turn_ms, self.gated = turn, 0, False

    def open_gate(self) -> None:
        """The caller finished speaking: what the agent sends next is a new answer."""
        self.gated = False

    def audio_queued(self, milliseconds: int) -> None:
        """Agent audio was queued for the caller (per chunk: constant time, no allocation)."""
        self.chunks_queued += 1
        self.turn_ms += milliseconds
        if self._arrival_waiters:
            for arrival in self._arrival_waiters:
                arrival.set()
            self._arrival_waiters.clear()

    def interrupt(self) -> None:
        """The caller barged in: start a new epoch, close the gate; nothing pending was heard."""
        self.epoch += 1
        self.gated = self.gate_after_clear
        for pending in self._pending.values():
            pending.settled.set()
        self._pending.clear()

    def progress_mark(self, turn: int, turn_ms: int) -> str:
        """Register a mark that, when echoed, means ``turn_ms`` of ``turn`` was heard."""
        name, _ = self._new_mark(turn=turn, turn_ms=turn_ms)
        return name

    def mark_echoed(self, name: str) -> Heard | None:
        """Twilio echoed ``name``: what was heard (None: not a progress mark, or cleared)."""
        pending = self._pending.pop(name, None)
        if pending is None:
            return None
        pending.heard = True
        pending.settled.set()
        return None if pending.turn is None else Heard(pending.turn, pending.turn_ms)

    def _new_mark(self, *, turn: int | None = None, turn_ms: int = 0) -> tuple[str, _PendingMark]:
        self._marks_made += 1
        name = f"archer-{self.epoch}-{self._marks_made}"
        pending = self._pending[name] = _PendingMark(self.epoch, turn, turn_ms)
        return name, pending

    async def wait_until_heard(self, place_mark: PlaceMark, *, since_epoch: int) -> bool:
        """Wait until everything the agent has queued so far has played to the caller.

        ``place_mark(name, epoch)`` must queue a Twilio mark behind the audio already queued.
        Returns False if the caller has interrupted (a clear) at any point since
        ``since_epoch`` — the epoch when the request to wait was made — before the end is heard.

        Any number of tasks may wait at once: each has its own mark and its own wake-up.

        Cancellation: the pending mark is forgotten when it is echoed or cleared; the waiter's
        wake-up event is dropped at once.
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
            arrival = trio.Event()
            self._arrival_waiters.add(arrival)
            try:
                with trio.move_on_after(SETTLE_SECONDS):
                    await arrival.wait()
            finally:
                self._arrival_waiters.discard(arrival)
            if self.epoch != pending.epoch:
                return False
            if self.chunks_queued == chunks_before:
                return True
