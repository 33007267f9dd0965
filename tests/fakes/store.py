"""``FakeCallStore``: the call store in a dict (``CallStore``); ``down`` makes it fail.

``tests/contract/test_call_store.py`` runs one suite against this fake and ``SqlCallStore`` on
SQLite and PostgreSQL, so what the fake answers is what the real store answers. The fake is one
process: a call whose stream it handed out is carried by a live instance, any other is not.
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import trio

from archer.call.records import (
    OPEN_STATUSES,
    TWILIO_TERMINAL_STATUSES,
    CallRecord,
    ClaimedCall,
    NewCall,
    OpenedCall,
    RecordingStatusUpdate,
    StreamClaim,
    TwilioStatusUpdate,
)
from archer.errors import StoreError


@attrs.define
class FakeCallStore:
    calls: dict[str, CallRecord] = attrs.Factory(dict)
    tokens: dict[str, tuple[str, object]] = attrs.Factory(dict)
    customers: dict[str, int] = attrs.Factory(dict)
    statuses: dict[str, TwilioStatusUpdate] = attrs.Factory(dict)
    recordings: dict[str, RecordingStatusUpdate] = attrs.Factory(dict)
    saves: int = 0
    down: bool = False
    #: Every write taken, in order: ("save_call" | "record_twilio_status", call_sid).
    writes: list[tuple[str, str]] = attrs.Factory(list)
    #: CallSids whose stream this store handed out (carried by this, a live instance).
    carried: set[str] = attrs.Factory(set)

    async def _io(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise StoreError("database unavailable (fake)")

    async def open_call(self, call: NewCall) -> OpenedCall:
        await self._io()
        customer_id = None
        if call.caller_e164 is not None:
            customer_id = self.customers.setdefault(call.caller_e164, len(self.customers) + 1)
        if call.call_sid in self.calls:  # armed once, as the real store (issue 19)
            return OpenedCall(call_sid=call.call_sid, customer_id=customer_id, armed=False)
        self.calls[call.call_sid] = CallRecord(
            call_sid=call.call_sid,
            status="initiated",
            started_at=call.started_at,
            customer_id=customer_id,
            from_number=call.from_number,
            to_number=call.to_number,
        )
        # As the real store, the webhook's times give only the token's lifetime; it runs on the
        # store's own clock (here the host's, standing in for the database's ``now()``).
        lifetime = call.stream_token_expires_at - call.started_at
        self.tokens[call.call_sid] = (call.stream_token_hash, datetime.now(UTC) + lifetime)
        return OpenedCall(call_sid=call.call_sid, customer_id=customer_id)

    async def claim_stream(self, claim: StreamClaim) -> ClaimedCall | None:
        await self._io()
        token = self.tokens.get(claim.call_sid)
        if token is None or token[0] != claim.stream_token_hash or token[1] <= datetime.now(UTC):  # type: ignore[operator]
            return None
        del self.tokens[claim.call_sid]
        self.carried.add(claim.call_sid)
        record = self.calls[claim.call_sid]
        return ClaimedCall(
            call_sid=record.call_sid,
            customer_id=record.customer_id,
            from_number=record.from_number,
            to_number=record.to_number,
            started_at=record.started_at,
        )

    async def save_call(self, record: CallRecord) -> None:
        await self._io()
        self.saves += 1
        self.calls[record.call_sid] = record
        self.writes.append(("save_call", record.call_sid))

    async def record_recording_status(self, update: RecordingStatusUpdate) -> bool:
        await self._io()
        if update.call_sid not in self.calls:
            return False
        self.recordings[update.recording_sid] = update
        return True

    async def record_twilio_status(self, update: TwilioStatusUpdate) -> str | None:
        await self._io()
        self.statuses[update.call_sid] = update
        self.writes.append(("record_twilio_status", update.call_sid))
        # As the real store: a status that beat the webhook keeps a minimal row, and a terminal
        # status finishes an open call no live instance carries (here: one never streamed).
        record = self.calls.get(update.call_sid)
        if record is None:
            record = CallRecord(
                call_sid=update.call_sid, status="initiated", started_at=datetime.now(UTC)
            )
            self.calls[update.call_sid] = record
        if (
            update.twilio_status not in TWILIO_TERMINAL_STATUSES
            or record.status not in OPEN_STATUSES
            or update.call_sid in self.carried
        ):
            return None
        self.calls[update.call_sid] = attrs.evolve(
            record,
            status="completed" if update.twilio_status == "completed" else "failed",
            end_reason="twilio_ended",
            ended_at=datetime.now(UTC),
        )
        self.tokens.pop(update.call_sid, None)
        return "twilio_ended"

    async def check(self) -> None:
        await self._io()


@attrs.define
class FakeSpool:
    """``RecordSpool`` in a list; ``broken`` makes it fail like a full disk."""

    records: list[CallRecord] = attrs.Factory(list)
    statuses: list[TwilioStatusUpdate] = attrs.Factory(list)
    recordings: list[RecordingStatusUpdate] = attrs.Factory(list)
    broken: bool = False

    async def append(self, record: CallRecord) -> None:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise OSError("No space left on device (fake)")
        self.records.append(record)

    async def append_recording(self, update: RecordingStatusUpdate) -> None:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise OSError("No space left on device (fake)")
        self.recordings.append(update)

    async def append_status(self, update: TwilioStatusUpdate) -> None:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise OSError("No space left on device (fake)")
        self.statuses.append(update)
