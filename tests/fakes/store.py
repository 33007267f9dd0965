"""``FakeCallStore``: the call store in a dict (``CallStore``); ``down`` makes it fail."""

from __future__ import annotations

import attrs
import trio

from archer.call.records import (
    CallRecord,
    ClaimedCall,
    NewCall,
    OpenedCall,
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
    saves: int = 0
    down: bool = False
    #: Every write taken, in order: ("save_call" | "record_twilio_status", call_sid).
    writes: list[tuple[str, str]] = attrs.Factory(list)

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
        self.tokens[call.call_sid] = (call.stream_token_hash, call.stream_token_expires_at)
        return OpenedCall(call_sid=call.call_sid, customer_id=customer_id)

    async def claim_stream(self, claim: StreamClaim) -> ClaimedCall | None:
        await self._io()
        token = self.tokens.get(claim.call_sid)
        if token is None or token[0] != claim.stream_token_hash or token[1] <= claim.now:  # type: ignore[operator]
            return None
        del self.tokens[claim.call_sid]
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

    async def record_twilio_status(self, update: TwilioStatusUpdate) -> None:
        await self._io()
        self.statuses[update.call_sid] = update
        self.writes.append(("record_twilio_status", update.call_sid))

    async def check(self) -> None:
        await self._io()


@attrs.define
class FakeSpool:
    """``RecordSpool`` in a list; ``broken`` makes it fail like a full disk."""

    records: list[CallRecord] = attrs.Factory(list)
    statuses: list[TwilioStatusUpdate] = attrs.Factory(list)
    broken: bool = False

    async def append(self, record: CallRecord) -> None:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise OSError("No space left on device (fake)")
        self.records.append(record)

    async def append_status(self, update: TwilioStatusUpdate) -> None:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise OSError("No space left on device (fake)")
        self.statuses.append(update)
