"""The ports the call is written against: the phone line, the agent, the call store.

Layer: ports (``typing.Protocol`` only). The call layer sees these and nothing else: never a
websocket, never a SQL session. Adapters (``archer.twilio.stream``,
``archer.cartesia.managed_client``, ``archer.db.store``) satisfy them in production;
``tests/fakes`` satisfy them in tests, and a contract suite (``tests/contract``) runs the same
checks against both.

Every method is a checkpoint. Errors are Archer's own (``archer.errors``); a hang-up by either
peer is an event, not an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from archer.call.events import AgentEvent
    from archer.call.outbound import (
        CallingWindow,
        CallRequest,
        Claim,
        OutgoingCall,
        QueuedCall,
        RequestView,
    )
    from archer.call.records import (
        CallRecord,
        ClaimedCall,
        NewCall,
        OpenedCall,
        RecordingStatusUpdate,
        StreamClaim,
        TwilioStatusUpdate,
    )
    from archer.call.session_facts import PaymentFacts, SessionValue
    from archer.twilio.frames import TwilioEvent


class TwilioStream(Protocol):
    """The caller's side of the call: a Twilio media stream after its ``start`` frame."""

    async def receive(self) -> TwilioEvent:
        """The next frame (``Media``, ``Dtmf``, ``Mark`` or ``Stop``).

        Raises:
            trio.EndOfChannel: the socket closed without a ``stop`` frame.
            TwilioProtocolError: a frame could not be parsed.
        """
        ...

    async def send_media(self, payload: str) -> None:
        """Queue base64 μ-law audio for playback to the caller."""
        ...

    async def send_mark(self, name: str) -> None:
        """Ask Twilio to echo ``name`` once everything queued before it has played."""
        ...

    async def send_clear(self) -> None:
        """Drop everything queued for playback; Twilio echoes every pending mark at once."""
        ...


class AgentStream(Protocol):
    """The agent's side of the call, after its handshake completed."""

    @property
    def agent_call_id(self) -> str:
        """The agent platform's id for this session (Cartesia's ``call_id``)."""
        ...

    @property
    def reports_turns(self) -> bool:
        """Whether the agent announces its turns (after a clear, the next one is awaited)."""
        ...

    async def receive(self) -> AgentEvent:
        """The next agent event; ``AgentHangup`` is the last one.

        Raises:
            AgentClosedError: the socket closed abnormally.
            AgentFatalError: the agent reported a fatal error.
            CartesiaProtocolError: an event could not be parsed.
        """
        ...

    async def send_audio(self, payload: str) -> None:
        """Send base64 caller audio in the agent's input format."""
        ...

    async def send_dtmf(self, digit: str) -> None:
        """Send a digit the caller pressed."""
        ...

    async def send_tool_result(self, tool_call_id: str, result: str, *, is_error: bool) -> None:
        """Answer a ``ToolCallRequest``."""
        ...

    async def ping(self) -> None:
        """Ping the agent and wait for the answer.

        Raises:
            AgentClosedError: the socket is gone.
        """
        ...


class RecordSpool(Protocol):
    """Where a call record goes when the database does not take it (replayed later)."""

    async def append(self, record: CallRecord) -> None:
        """Keep ``record`` durably (on disk) until it can be saved.

        Raises:
            OSError: it could not be kept.
        """
        ...

    async def append_recording(self, update: RecordingStatusUpdate) -> None:
        """Keep a recording status callback durably until it can be saved (issue 21).

        Raises:
            OSError: it could not be kept.
        """
        ...

    async def append_status(self, update: TwilioStatusUpdate) -> None:
        """Keep Twilio's status callback durably until it can be saved (after its call record).

        Raises:
            OSError: it could not be kept.
        """
        ...


class TelephonyControl(Protocol):
    """The phone call itself, beyond its media stream (Twilio's REST API)."""

    async def transfer(self, call_sid: str, number: str) -> None:
        """Move the live call to ``number`` (the media stream ends).

        Raises:
            TelephonyError: Twilio refused or could not be reached.
        """
        ...

    async def hang_up(self, call_sid: str) -> None:
        """End the call; a call that is already over is not an error.

        Raises:
            TelephonyError: Twilio refused or could not be reached.
        """
        ...

    async def set_recording(
        self, call_sid: str, *, paused: bool, pause_behavior: str
    ) -> str | None:
        """Pause (``pause_behavior``: ``skip`` or ``silence``) or resume the call's recording;
        the SID of the recording Twilio acted on, if its answer named one.

        Raises:
            TelephonyError: Twilio refused (no recording in progress) or could not be reached.
        """
        ...


@attrs.frozen(kw_only=True)
class AgentSession:
    """What the call tells the agent about itself when it opens the session."""

    call_sid: str
    caller_number: str
    customer_id: int | None
    audio_format: str
    #: More dynamic variables (Line: start metadata), e.g. the resume hint a session that
    #: replaces a failed one is given (``AGENT_RESUME_VARIABLES``; issue 16).
    extra_variables: Mapping[str, str] = attrs.field(factory=dict)
    #: An outbound call's purpose and payment facts (``archer.call.session_facts``; issue 22),
    #: sent with every session of the call, a replacing one too. Empty for inbound calls.
    facts: Mapping[str, SessionValue] = attrs.field(factory=dict)


class AgentConnector(Protocol):
    """Opens agent sessions; one per call."""

    def open_session(self, session: AgentSession) -> AbstractAsyncContextManager[AgentStream]:
        """Connect, handshake, and yield a ready ``AgentStream``; close it on exit.

        Raises:
            AgentUnavailableError: unreachable, rejected, or not ready within its deadline.
        """
        ...


class CallStore(Protocol):
    """Where calls are recorded. Every write is idempotent."""

    async def open_call(self, call: NewCall) -> OpenedCall:
        """Find or create the caller's customer and insert the call row, armed with its token.

        A call is armed once: for a CallSid seen before, nothing is armed (``armed=False``).

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def claim_stream(self, claim: StreamClaim) -> ClaimedCall | None:
        """Spend a one-time stream token; None if it is unknown, expired or already spent.

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def save_call(self, record: CallRecord) -> None:
        """Upsert the call row by ``call_sid`` with its turns and tool calls.

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def record_twilio_status(self, update: TwilioStatusUpdate) -> str | None:
        """Store Twilio's final status and duration; safe twice, late, or before the stream ends.

        A terminal status for a call no live instance carries finishes it; returns the end
        reason it was given then (None: the call was not finished by this).

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def record_recording_status(self, update: RecordingStatusUpdate) -> bool:
        """Store what Twilio reported about a call's recording (one row per recording; a final
        status is never overwritten); False if no call has that CallSid (nothing stored).

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def check(self) -> None:
        """Round-trip to the database (readiness).

        Raises:
            StoreError: the database is unavailable.
        """
        ...


class AttemptOutcomes(Protocol):
    """How an outbound attempt ended: written by the callbacks and by the dispatcher alike."""

    async def attempt_ended(
        self,
        request_id: int,
        attempt: int,
        outcome: str,
        *,
        retry_delay: float,
        max_attempts: int,
        answered_by: str | None = None,
        end_reason: str | None = None,
    ) -> str:
        """Record how the attempt ended (retrying a miss later); the request's new status.

        Raises:
            StoreError: the database is unavailable.
        """
        ...


class OutboundQueue(AttemptOutcomes, Protocol):
    """The outbound queue as ``POST /calls`` and ``GET /calls/{id}`` use it (issue 22).

    The SQL adapter is ``archer.db.outbound.SqlOutbound``.
    """

    async def key_id(self, key: str) -> int | None:
        """The id of the live API key ``key``; None if unknown or revoked.

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def enqueue(
        self, request: CallRequest, *, api_key_id: int | None, idempotency_key: str | None
    ) -> QueuedCall:
        """Queue ``request`` or, for an ``idempotency_key`` seen before, find its first answer.

        Raises:
            UnknownTransactionError: no such transaction (nothing is written).
            StoreError: the database is unavailable.
        """
        ...

    async def view(self, request_id: int, *, api_key_id: int | None = None) -> RequestView | None:
        """The request with its attempts; None if there is no such request, or if ``api_key_id``
        is given and another key placed it.

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def attempt_answered(
        self,
        request_id: int,
        attempt: int,
        *,
        answered_by: str | None = None,
        end_reason: str | None = None,
        call_sid: str | None = None,
    ) -> bool:
        """The attempt was answered (its call row is ``call_sid``'s), or AMD gave a verdict.

        Raises:
            StoreError: the database is unavailable.
        """
        ...


class CallPlacer(Protocol):
    """Rings a number through the telephony provider (``TwilioRestControl.place_call``)."""

    async def place_call(self, call: OutgoingCall) -> str:
        """Place the call; its CallSid.

        Raises:
            TelephonyError: refused or unreachable (whether it was placed may be unknown).
        """
        ...


class OutboundDispatchQueue(AttemptOutcomes, Protocol):
    """The outbound queue as the dispatcher uses it (``archer.db.outbound.SqlOutbound``)."""

    async def abandon_lost(self, lease_seconds: float) -> list[int]:
        """End the attempts whose instance died before their CallSid was written; their ids.

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def claim(
        self, instance_id: str, *, cps: float, max_active: int, window: CallingWindow
    ) -> Claim | None:
        """The next request this instance may dial now, if the pace, window and cap allow.

        Raises:
            StoreError: the database is unavailable.
        """
        ...

    async def attempt_placed(self, request_id: int, attempt: int, call_sid: str) -> None:
        """Record the CallSid Twilio gave the attempt.

        Raises:
            StoreError: the database is unavailable.
        """
        ...


class CallFacts(Protocol):
    """What an outbound call is about, for its agent session (issue 22).

    The SQL adapter is ``archer.db.call_facts.SqlCallFacts``.
    """

    async def payment_facts(self, call_sid: str) -> PaymentFacts | None:
        """The purpose and payment facts of the outbound call ``call_sid``; None for a call
        Archer did not place (an inbound call) or whose request names no payment.

        Raises:
            StoreError: the database is unavailable.
        """
        ...


class OutboundTelephony(CallPlacer, Protocol):
    """What outbound calls ask of the telephony provider (``TwilioRestControl``): place a call,
    leave a voicemail, hang up."""

    async def leave_voicemail(self, call_sid: str, message: str) -> None:
        """Replace the live call's TwiML: say ``message``, then hang up.

        Raises:
            TelephonyError: refused or unreachable.
        """
        ...

    async def hang_up(self, call_sid: str) -> None:
        """End the call; one already over is not an error.

        Raises:
            TelephonyError: refused or unreachable.
        """
        ...
