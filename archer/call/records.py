"""Frozen records that cross from the trio thread into database threads.

Layer: call vocabulary; pure (attrs and the standard library only).

Rules: every type here is immutable, so a DB worker thread can never see a half-updated call.
The mutable per-call state lives in ``archer.call.state`` and hands out ``CallRecord`` snapshots.
Times are timezone-aware UTC ``datetime``s; durations are integers in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, Literal

import attrs

CallStatus = Literal["initiated", "in_progress", "completed", "failed", "transferred"]

#: The bounded set of ``calls.end_reason`` values (metrics label them, so it never grows freely).
END_REASONS: Final = frozenset(
    {
        "caller_hangup",  # Twilio sent `stop`
        "twilio_disconnected",  # the media socket closed without `stop`
        "twilio_lost",  # no media from Twilio for TWILIO_MEDIA_TIMEOUT (socket gone or silent)
        "agent_hangup",  # the agent closed with 1000
        "agent_ended",  # the agent's end_call tool
        "transferred",  # handed to a human
        "agent_unreachable",  # could not connect to the agent
        "agent_rejected",  # the agent refused the upgrade or the session
        "agent_handshake_timeout",  # no session_ready in time
        "agent_error",  # the agent closed abnormally or reported a fatal error
        "agent_unresponsive",  # keepalive pings went unanswered
        "agent_idle_timeout",  # the agent closed the session for inactivity
        # The agent failed and no new session came within AGENT_RECONNECT_ATTEMPTS/_WINDOW:
        "agent_lost_transferred",  # ...the caller heard an apology and went to HUMAN_AGENT_NUMBER
        "agent_lost",  # ...the caller heard an apology and was hung up on (no number, or refused)
        "protocol_error",  # a peer sent something we could not understand
        "stream_rejected",  # the media stream's one-time token was missing, used or expired
        "max_duration",  # the call hit the maximum call length
        "overflow",  # turned away at MAX_ACTIVE_CALLS (apology, or OVERFLOW_NUMBER): never bridged
        "server_shutdown",  # the server drained and cancelled the call
        "database_unavailable",  # the database failed while the call needed it
        "internal_error",  # a bug; the traceback is in the log
        # Finished by another party than the call's own task (archer.db.instances, the status
        # callback), because the process carrying the call died or never got the stream:
        "instance_lost",  # the instance carrying the stream stopped renewing its lease
        "overdue",  # still open past MAX_CALL_SECONDS plus a margin, whatever its lease said
        "twilio_ended",  # Twilio's final status came and no stream had been carried
    }
)

#: Call statuses of a call nobody has finished yet (everything else is final).
OPEN_STATUSES: Final = ("initiated", "in_progress")
#: ``CallStatus`` values of Twilio's status callback that mean the phone call is over.
TWILIO_TERMINAL_STATUSES: Final = frozenset(
    {"completed", "busy", "failed", "no-answer", "canceled"}
)


@attrs.frozen(slots=True)
class TurnRecord:
    """One turn of the conversation as stored in ``call_turns``."""

    turn: int
    role: str
    text: str
    interrupted: bool = False
    start_time: float | None = None
    end_time: float | None = None
    #: Milliseconds of this agent turn the caller actually heard (None when not measured).
    heard_ms: int | None = None


@attrs.frozen(slots=True)
class ToolCallRecord:
    """One tool invocation as stored in ``tool_calls`` (secrets already masked)."""

    tool_call_id: str
    name: str
    arguments: Mapping[str, object]
    started_at: datetime
    result: str | None = None
    is_error: bool = False
    finished_at: datetime | None = None
    #: How the invocation ended, for tools that say (``collect_pin``: one of
    #: ``PIN_CAPTURE_OUTCOMES``); None for the others. Never a digit or a digit count.
    outcome: str | None = None


#: ``tool_calls.outcome`` of a ``collect_pin`` (and ``archer_pin_captures_total{outcome}``):
#: ``verified``; ``wrong_pin`` (not verified, attempts left); ``locked`` (the call's attempts
#: spent) and ``locked_out`` (the customer's, across calls); ``timed_out`` (nothing keyed in
#: time); ``invalid`` (not 4 to 8 digits); ``barge_in`` (the agent was cut off); ``hang_up``
#: (the caller's stream ended mid-entry); ``agent_failed`` (the agent session that asked died
#: mid-entry, or the agent's side ended the call); ``call_failed`` (a task of the call failed
#: mid-entry and ended it, before its end reason was named: without reconnects, an agent
#: failure lands here); ``call_ended`` (the call ended mid-entry for another reason: its maximum
#: length, a shutdown); ``refused_recording`` (the recording could not be paused: nothing
#: collected); ``refused_busy`` (another entry was running); ``refused_setting`` (``PIN_ENTRY``
#: does not allow it).
PIN_CAPTURE_OUTCOMES: Final = (
    "verified",
    "wrong_pin",
    "locked",
    "locked_out",
    "timed_out",
    "invalid",
    "barge_in",
    "hang_up",
    "agent_failed",
    "call_failed",
    "call_ended",
    "refused_recording",
    "refused_busy",
    "refused_setting",
)

RecordingAction = Literal["pause", "resume"]


@attrs.frozen(slots=True)
class RecordingEventRecord:
    """One request to pause or resume the call's recording (issue 21), as stored in
    ``recording_events``: when Archer asked, when Twilio answered, and whether it accepted.

    ``seq`` orders a call's events (1, 2, ...) and keys the idempotent upsert; times are the
    wall clock's, like a tool call's ``started_at``.
    """

    seq: int
    action: RecordingAction
    requested_at: datetime
    answered_at: datetime
    accepted: bool
    #: Twilio's error code when it refused (None: accepted, or Twilio was not reached).
    error_code: int | None = None
    #: The recording Twilio paused or resumed, when it said.
    recording_sid: str | None = None


@attrs.frozen(slots=True)
class CallRecord:
    """Everything Archer knows about one call, as written to ``calls`` and its child tables.

    ``twilio_status`` and ``twilio_duration_s`` are not here: only the status callback writes
    them, so a late flush can never erase what the callback stored.
    """

    call_sid: str
    status: CallStatus
    started_at: datetime
    stream_sid: str | None = None
    customer_id: int | None = None
    from_number: str | None = None
    to_number: str | None = None
    end_reason: str | None = None
    agent_call_id: str | None = None
    connected_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    error: str | None = None
    turns: tuple[TurnRecord, ...] = ()
    tool_calls: tuple[ToolCallRecord, ...] = ()
    #: Custom events the agent sent (Line agents), in order, as received (bounded by the call
    #: state).
    agent_events: tuple[Mapping[str, object], ...] = ()
    #: Agent sessions opened after the first because the agent failed (issue 16)...
    agent_reconnects: int = 0
    #: ...and every agent session's call id, in order (``agent_call_id`` is the last).
    agent_call_ids: tuple[str, ...] = ()
    #: Every pause and resume of the call's recording, in order (issue 21).
    recording_events: tuple[RecordingEventRecord, ...] = ()
    #: Keys withheld from the agent (issue 21): caller frames sent to it as silence during
    #: keypad captures, and outside them because they carried a keypad tone; keys dropped.
    frames_silenced_for_pin: int = 0
    frames_silenced_for_tones: int = 0
    dtmf_dropped: int = 0


@attrs.frozen(slots=True)
class NewCall:
    """What the voice webhook knows when it opens a call row."""

    call_sid: str
    from_number: str
    to_number: str
    #: The caller's E.164 number if ``From`` is a real number, else None (withheld, SIP, client:).
    caller_e164: str | None
    #: SHA-256 hex of the one-time stream token; the token itself is never stored.
    stream_token_hash: str
    stream_token_expires_at: datetime
    started_at: datetime


@attrs.frozen(slots=True)
class OpenedCall:
    """The call row the webhook opened and the customer it found or created (None: none)."""

    call_sid: str
    customer_id: int | None
    #: This webhook's token is the call's one usable token. False for a repeated webhook: the
    #: call was armed before (its token may be live, spent or expired), so this one must not
    #: be handed a stream.
    armed: bool = True


@attrs.frozen(slots=True)
class StreamClaim:
    """A media stream asking to carry a call, with the token from its ``start`` frame."""

    call_sid: str
    stream_sid: str
    stream_token_hash: str
    now: datetime


@attrs.frozen(slots=True)
class ClaimedCall:
    """A call whose stream token was valid and is now spent."""

    call_sid: str
    customer_id: int | None
    from_number: str | None
    to_number: str | None
    started_at: datetime


@attrs.frozen(slots=True)
class TwilioStatusUpdate:
    """The final status Twilio reported in its status callback."""

    call_sid: str
    twilio_status: str
    twilio_duration_s: int | None


@attrs.frozen(slots=True)
class RecordingStatusUpdate:
    """What Twilio reported about a call's recording (issue 21), never the audio itself.

    One row per recording (``recording_sid``); a later callback updates it, a late
    ``in-progress`` never overwrites ``completed`` or ``absent``.
    """

    call_sid: str
    recording_sid: str
    status: str
    channels: int | None = None
    duration_s: int | None = None
    url: str | None = None
    error_code: int | None = None


#: A recording's final states (``RecordingStatus``): no later callback changes them.
RECORDING_FINAL_STATUSES: Final = frozenset({"completed", "absent", "failed"})
