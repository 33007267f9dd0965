"""The live state of one call, and the snapshot that leaves it.

Layer: call. Mutated only by the call's own tasks on the trio thread; the database only ever
receives a frozen ``CallRecord`` from ``snapshot()``.

Rules: the first ``finish()`` wins, so the reason a call ended is the first thing that ended it
(a caller hanging up is not overwritten by the cancellation it causes). Counters are plain ints
bumped on the per-frame path; nothing here allocates per frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final, Literal

import attrs

from archer.call.events import TurnEnded, TurnStarted, TurnTextDelta
from archer.call.records import (
    CallRecord,
    CallStatus,
    ClaimedCall,
    RecordingAction,
    RecordingEventRecord,
    ToolCallRecord,
    TurnRecord,
)

#: End reasons that only say the media stream stopped, whatever stopped it.
STREAM_END_REASONS = frozenset({"caller_hangup", "twilio_disconnected", "twilio_lost"})

# An agent's custom events are stored on the call row, so one chatty or hostile agent must not
# grow it without bound: keep the first MAX_AGENT_EVENTS (count the rest) and replace any event
# whose compact JSON exceeds MAX_AGENT_EVENT_BYTES with a marker saying how big it was.
MAX_AGENT_EVENTS: Final = 100
MAX_AGENT_EVENT_BYTES: Final = 4096


def utc_now() -> datetime:
    """The wall-clock time, timezone-aware UTC (what every stored timestamp uses)."""
    return datetime.now(UTC)


@attrs.define
class _TurnDraft:
    role: str
    start_time: float | None
    text: str = ""
    ended: bool = False
    interrupted: bool = False
    end_time: float | None = None
    heard_ms: int | None = None


@attrs.define
class CallState:
    """Everything a call accumulates while it runs."""

    call_sid: str
    stream_sid: str
    started_at: datetime
    connected_at: datetime
    #: ``trio.current_time()`` when the stream started; durations are measured from it.
    connected_clock: float
    customer_id: int | None = None
    from_number: str | None = None
    to_number: str | None = None
    agent_call_id: str | None = None
    #: Every agent session's call id, in order (issue 16: a failed agent is replaced).
    agent_call_ids: list[str] = attrs.Factory(list)
    #: Agent sessions opened after the first because the agent failed.
    agent_reconnects: int = 0
    #: New agent sessions that failed to open (refused, unreachable, not ready in time).
    agent_reconnect_failures: int = 0
    #: Caller frames dropped while no agent session was there to hear them (a reconnect).
    frames_dropped_in_reconnect: int = 0
    #: From opening the agent's socket to its ``session_ready``.
    agent_setup_seconds: float | None = None
    frames_in: int = 0
    frames_out: int = 0
    #: Caller frames dropped because the uplink to the agent was full (the Twilio reader's).
    frames_dropped_to_agent: int = 0
    #: Agent frames dropped because the downlink to Twilio was full (the agent reader's).
    frames_dropped_to_caller: int = 0
    #: Twilio frames that could not be parsed (skipped; the call went on).
    frames_malformed: int = 0
    #: Times the caller interrupted the agent (agent clears).
    barge_ins: int = 0
    #: Milliseconds Twilio's audio stalled, filled with silence towards the agent.
    inbound_gap_ms: int = 0
    #: Caller frames replaced by silence towards the agent during keypad captures (the
    #: forwarder's; ``archer.call.keypad``).
    frames_silenced_for_pin: int = 0
    #: Caller frames replaced by silence towards the agent outside a capture because they
    #: carried a keypad tone (or followed one) while keys are withheld (``DTMF_TO_AGENT`` off;
    #: ``archer.audio.tone_gate``).
    frames_silenced_for_tones: int = 0
    #: Keypad keys that reached neither the agent nor a capture (``DTMF_TO_AGENT`` off, or a
    #: capture's buffer full).
    dtmf_dropped: int = 0
    #: Sampled time one frame spent inside Archer: (direction, seconds), for the metrics.
    latency_samples: list[tuple[Literal["to_agent", "to_caller"], float]] = attrs.Factory(list)
    status: CallStatus = "in_progress"
    end_reason: str | None = None
    error: str | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    #: Custom agent events not kept because the call already held MAX_AGENT_EVENTS.
    agent_events_dropped: int = 0
    #: Writes of the record the database took while the call ran (and the final flush), and
    #: those it refused (``archer.call.recorder``).
    db_writes: int = 0
    db_write_failures: int = 0
    #: Told when a turn ends, so the record is written soon (``CallRecorder.turn_ended``).
    on_turn_ended: Callable[[], None] | None = None
    #: How the call is about to end, announced by a tool before it asks Twilio to end it.
    _expected: tuple[CallStatus, str] | None = None
    _turns: dict[int, _TurnDraft] = attrs.Factory(dict)
    _tool_calls: dict[str, ToolCallRecord] = attrs.Factory(dict)
    _agent_events: list[dict[str, object]] = attrs.Factory(list)
    _recording_events: list[RecordingEventRecord] = attrs.Factory(list)

    @classmethod
    def for_claimed(
        cls, claimed: ClaimedCall, *, stream_sid: str, connected_at: datetime, clock: float
    ) -> CallState:
        """The state of a call whose media stream just proved its one-time token."""
        return cls(
            call_sid=claimed.call_sid,
            stream_sid=stream_sid,
            started_at=claimed.started_at,
            connected_at=connected_at,
            connected_clock=clock,
            customer_id=claimed.customer_id,
            from_number=claimed.from_number,
            to_number=claimed.to_number,
        )

    @property
    def finished(self) -> bool:
        """True once something decided how the call ends."""
        return self.end_reason is not None

    def finish(self, status: CallStatus, end_reason: str, error: str | None = None) -> bool:
        """Record how the call ends; returns False (and changes nothing) if it already had.

        While an outcome is expected (a transfer under way), the media stream ending is that
        outcome arriving, not the caller hanging up.
        """
        if self.end_reason is not None:
            return False
        if self._expected is not None and end_reason in STREAM_END_REASONS:
            status, end_reason = self._expected
        self.status = status
        self.end_reason = end_reason
        self.error = error
        return True

    def expect(self, status: CallStatus, end_reason: str) -> None:
        """Announce the outcome a pending request to Twilio will cause."""
        self._expected = (status, end_reason)

    def withdraw_expectation(self) -> None:
        self._expected = None

    def close(self, *, now: datetime, clock: float) -> None:
        """Stamp the end time and duration (idempotent: the first stamp stays)."""
        if self.ended_at is None:
            self.ended_at = now
            self.duration_ms = max(0, round((clock - self.connected_clock) * 1000))

    # --- turns -------------------------------------------------------------------------------

    def turn_started(self, event: TurnStarted) -> None:
        draft = self._turns.get(event.turn)
        if draft is None:
            self._turns[event.turn] = _TurnDraft(role=event.role, start_time=event.start_time)

    def turn_text(self, event: TurnTextDelta) -> None:
        draft = self._turns.get(event.turn)
        if draft is None:
            # A delta for a turn we never saw start: keep the words rather than lose them.
            draft = self._turns[event.turn] = _TurnDraft(role="assistant", start_time=None)
        draft.text += event.text

    def turn_ended(self, event: TurnEnded) -> None:
        draft = self._turns.setdefault(
            event.turn, _TurnDraft(role=event.role, start_time=event.start_time)
        )
        draft.role = event.role
        draft.text = event.text
        draft.ended = True
        draft.interrupted = event.interrupted
        draft.end_time = event.end_time
        if draft.start_time is None:
            draft.start_time = event.start_time
        if self.on_turn_ended is not None:
            self.on_turn_ended()

    def turn_audible(self, turn: int) -> None:
        """The agent's turn has audio on its way to the caller: it has been heard 0 ms so far."""
        draft = self._turns.get(turn)
        if draft is not None and draft.heard_ms is None:
            draft.heard_ms = 0

    def turn_heard(self, turn: int, milliseconds: int) -> None:
        """Twilio confirmed the caller heard ``milliseconds`` of the agent's ``turn``."""
        draft = self._turns.get(turn)
        if draft is not None:
            draft.heard_ms = max(draft.heard_ms or 0, milliseconds)

    @property
    def last_turn(self) -> int:
        """The highest turn number seen so far (0 before any): a new agent session counts on."""
        return max(self._turns, default=0)

    @property
    def turn_count(self) -> int:
        return len(self._turns)

    # --- tool calls --------------------------------------------------------------------------

    def tool_started(
        self, tool_call_id: str, name: str, arguments: Mapping[str, object], *, now: datetime
    ) -> None:
        self._tool_calls[tool_call_id] = ToolCallRecord(
            tool_call_id=tool_call_id, name=name, arguments=arguments, started_at=now
        )

    def tool_finished(
        self,
        tool_call_id: str,
        result: str,
        *,
        is_error: bool,
        now: datetime,
        outcome: str | None = None,
    ) -> None:
        started = self._tool_calls[tool_call_id]
        self._tool_calls[tool_call_id] = attrs.evolve(
            started, result=result, is_error=is_error, finished_at=now, outcome=outcome
        )

    @property
    def tool_call_count(self) -> int:
        return len(self._tool_calls)

    # --- the recording -----------------------------------------------------------------------

    def recording_changed(
        self,
        action: RecordingAction,
        *,
        requested_at: datetime,
        answered_at: datetime,
        accepted: bool,
        error_code: int | None = None,
        recording_sid: str | None = None,
    ) -> None:
        """Record one pause or resume request and Twilio's answer (issue 21)."""
        self._recording_events.append(
            RecordingEventRecord(
                seq=len(self._recording_events) + 1,
                action=action,
                requested_at=requested_at,
                answered_at=answered_at,
                accepted=accepted,
                error_code=error_code,
                recording_sid=recording_sid,
            )
        )

    # --- agent events ------------------------------------------------------------------------

    def agent_event(self, metadata: Mapping[str, object]) -> None:
        """Record a custom event the agent sent, within the bounds above."""
        if len(self._agent_events) >= MAX_AGENT_EVENTS:
            self.agent_events_dropped += 1
            return
        event = dict(metadata)
        size = len(json.dumps(event, separators=(",", ":"), default=str).encode())
        if size > MAX_AGENT_EVENT_BYTES:
            event = {"truncated": True, "bytes": size}
        self._agent_events.append(event)

    @property
    def frames_dropped(self) -> int:
        """Frames dropped in both directions (the record keeps only the total)."""
        return self.frames_dropped_to_agent + self.frames_dropped_to_caller

    # --- leaving the trio thread -------------------------------------------------------------

    def snapshot(self) -> CallRecord:
        """A frozen copy for the database; turns still open are stored as interrupted."""
        turns = tuple(
            TurnRecord(
                turn=number,
                role=draft.role,
                text=draft.text,
                interrupted=draft.interrupted or not draft.ended,
                start_time=draft.start_time,
                end_time=draft.end_time,
                heard_ms=draft.heard_ms,
            )
            for number, draft in sorted(self._turns.items())
        )
        return CallRecord(
            call_sid=self.call_sid,
            status=self.status,
            started_at=self.started_at,
            stream_sid=self.stream_sid,
            customer_id=self.customer_id,
            from_number=self.from_number,
            to_number=self.to_number,
            end_reason=self.end_reason,
            agent_call_id=self.agent_call_id,
            connected_at=self.connected_at,
            ended_at=self.ended_at,
            duration_ms=self.duration_ms,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            frames_dropped=self.frames_dropped,
            error=self.error,
            turns=turns,
            tool_calls=tuple(self._tool_calls.values()),
            agent_events=tuple(self._agent_events),
            agent_reconnects=self.agent_reconnects,
            agent_call_ids=tuple(self.agent_call_ids),
            recording_events=tuple(self._recording_events),
            frames_silenced_for_pin=self.frames_silenced_for_pin,
            frames_silenced_for_tones=self.frames_silenced_for_tones,
            dtmf_dropped=self.dtmf_dropped,
        )

    def summary(self) -> dict[str, object]:
        """The fields of the canonical ``call.finished`` log line."""
        return {
            "status": self.status,
            "end_reason": self.end_reason,
            "duration_ms": self.duration_ms,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": self.frames_dropped,
            "frames_dropped_to_agent": self.frames_dropped_to_agent,
            "frames_dropped_to_caller": self.frames_dropped_to_caller,
            "frames_malformed": self.frames_malformed,
            "barge_ins": self.barge_ins,
            "inbound_gap_ms": self.inbound_gap_ms,
            "frames_silenced_for_pin": self.frames_silenced_for_pin,
            "frames_silenced_for_tones": self.frames_silenced_for_tones,
            "dtmf_dropped": self.dtmf_dropped,
            "turns": self.turn_count,
            "tool_calls": self.tool_call_count,
            "agent_events": len(self._agent_events),
            "agent_call_id": self.agent_call_id,
            "agent_reconnects": self.agent_reconnects,
            "agent_reconnect_failures": self.agent_reconnect_failures,
            "frames_dropped_in_reconnect": self.frames_dropped_in_reconnect,
            "db_writes": self.db_writes,
            "db_write_failures": self.db_write_failures,
            "error": self.error,
        }
