"""The call's record, written as the call goes: turns in small batches, side effects before.

Layer: call. Written against the ``CallStore`` port; one ``CallRecorder`` per call, whose ``run``
task in the call's nursery is the one writer of the record while the call lives.

Rules:

- Writes go through the same idempotent upsert as the final flush (``CallStore.save_call``), so
  the final flush, the spool and a replay repeat them harmlessly. A write carries the call row
  (still ``in_progress``: only the final flush, a reaper or the status callback finishes a call)
  and only the turns, tool calls and recording pauses/resumes that changed since the last write
  the database took.
- When: at each turn's end, or every ``RECORD_BATCH_SECONDS`` when something else changed (a
  tool finished, words of a long turn), whichever comes first. Audio never waits for a write:
  the writer is its own task and the pumps only set an event.
- A tool with a side effect (``Tool.side_effect``) asks for ``write_now`` before it acts and
  after, so the bank's audit has the row before the action; if the "before" write fails, the
  tool does not act (``archer.call.tools``).
- One write at a time (a lock), each reading the state when it starts, so the rows only move
  forward; a write still in flight when the call ends can land after the final flush, and the
  store never lets an in-progress write undo a finished call (``SqlCallStore.save_call``).
- A failed write is logged and counted, never fatal: the next one, or the final flush (and
  behind it the spool), writes the same rows again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from archer.errors import StoreError

if TYPE_CHECKING:
    from archer.call.ports import CallStore
    from archer.call.records import CallRecord, ToolCallRecord, TurnRecord
    from archer.call.state import CallState

log = structlog.get_logger(__name__)

#: The longest a change other than a turn's end waits before it is written.
RECORD_BATCH_SECONDS: Final = 3.0
#: The longest one write may take (a side-effecting tool waits for it before it acts).
RECORD_WRITE_TIMEOUT: Final = 5.0


@attrs.define
class CallRecorder:
    """Writes one call's record while it runs (``run``), and on demand (``write_now``)."""

    call: CallState
    store: CallStore
    _lock: trio.Lock = attrs.Factory(trio.Lock)
    _due: trio.Event = attrs.Factory(trio.Event)
    #: What the database holds of the call, as far as this recorder knows.
    _written_turns: dict[int, TurnRecord] = attrs.Factory(dict)
    _written_tools: dict[str, ToolCallRecord] = attrs.Factory(dict)
    #: ``seq`` of the recording events written (they never change once recorded).
    _written_recording_events: set[int] = attrs.Factory(set)

    def turn_ended(self) -> None:
        """A turn ended: write soon (the writer wakes; nothing here waits)."""
        self._due.set()

    async def run(self) -> None:
        """Write at each turn's end, or every ``RECORD_BATCH_SECONDS`` if anything changed.

        Cancellation: stops at once; a write in flight is abandoned (see ``write_now``).
        """
        while True:
            with trio.move_on_after(RECORD_BATCH_SECONDS):
                await self._due.wait()
            self._due = trio.Event()
            await self.write_now()

    async def write_now(self) -> bool:
        """Write what changed; True if the database holds the call's state as of now.

        Never raises ``StoreError`` (it is logged and counted as ``db_write_failures``).

        Cancellation: the write in flight is abandoned in its thread and may still commit,
        harmlessly (see the comment below); the final flush repeats it.
        """
        async with self._lock:
            changes = self._changes()
            if changes is None:
                return True
            # Not shielded: a write the call's end cancels may still commit after the final
            # flush, and the store makes that harmless (an in-progress write never reopens a
            # finished row nor overwrites its turns and tool calls; it only adds missing ones).
            with trio.move_on_after(RECORD_WRITE_TIMEOUT) as deadline:
                try:
                    await self.store.save_call(changes)
                except StoreError as exc:
                    self.call.db_write_failures += 1
                    log.warning("call.write_failed", error=str(exc))
                    return False
            if deadline.cancelled_caught:
                self.call.db_write_failures += 1
                log.warning("call.write_timed_out", timeout=RECORD_WRITE_TIMEOUT)
                return False
            self.call.db_writes += 1
            self._written_turns.update((turn.turn, turn) for turn in changes.turns)
            self._written_tools.update((tool.tool_call_id, tool) for tool in changes.tool_calls)
            self._written_recording_events.update(e.seq for e in changes.recording_events)
            return True

    def _changes(self) -> CallRecord | None:
        """The record with only unwritten turns, tool calls and recording events; None if nothing
        changed."""
        record = self.call.snapshot()
        turns = tuple(t for t in record.turns if self._written_turns.get(t.turn) != t)
        tools = tuple(t for t in record.tool_calls if self._written_tools.get(t.tool_call_id) != t)
        recording = tuple(
            e for e in record.recording_events if e.seq not in self._written_recording_events
        )
        if not turns and not tools and not recording:
            return None  # the row itself: the claim wrote it, the final flush completes it
        # Never finished from here: the final flush (or a reaper) decides how the call ends.
        return attrs.evolve(
            record,
            status="in_progress",
            end_reason=None,
            error=None,
            ended_at=None,
            duration_ms=None,
            turns=turns,
            tool_calls=tools,
            recording_events=recording,
        )
