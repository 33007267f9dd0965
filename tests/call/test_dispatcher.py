"""The outbound dispatcher (``archer.call.dispatcher``) against in-memory fakes of its ports.

Autojump clock. What it sends (numbers and Archer's URLs only), what it writes back, and the
exactly-once rule: a refusal Twilio answered is a retryable ``failed`` attempt; a request that
got no answer may have placed the call, so it is never retried.
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import trio

from archer.call.dispatcher import run_dispatcher
from archer.call.outbound import CallingWindow, Claim, OutgoingCall
from archer.errors import StoreError, TelephonyError
from archer.settings import Settings

SETTINGS = Settings(
    webhook_base_url="https://archer.example.com",
    outbound_from_number="+15005550006",
    outbound_cps=1.0,
    outbound_window="00:00-24:00",
    instance_id="dispatcher-test",
)


@attrs.define
class FakeQueue:
    claims: list[Claim | StoreError | None]
    placed: list[tuple[int, int, str]] = attrs.Factory(list)
    ended: list[tuple[int, int, str, str | None]] = attrs.Factory(list)
    sweeps: int = 0

    async def abandon_lost(self, lease_seconds: float) -> list[int]:
        await trio.lowlevel.checkpoint()
        self.sweeps += 1
        return []

    async def claim(
        self, instance_id: str, *, cps: float, max_active: int, window: CallingWindow
    ) -> Claim | None:
        await trio.lowlevel.checkpoint()
        assert instance_id == "dispatcher-test"
        if not self.claims:
            return None
        claim = self.claims.pop(0)
        if isinstance(claim, StoreError):
            raise claim
        return claim

    async def attempt_placed(self, request_id: int, attempt: int, call_sid: str) -> None:
        await trio.lowlevel.checkpoint()
        self.placed.append((request_id, attempt, call_sid))

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
        await trio.lowlevel.checkpoint()
        self.ended.append((request_id, attempt, outcome, end_reason))
        return "queued"


@attrs.define
class FakePlacer:
    answers: list[str | TelephonyError]
    sent: list[OutgoingCall] = attrs.Factory(list)

    async def place_call(self, call: OutgoingCall) -> str:
        await trio.lowlevel.checkpoint()
        self.sent.append(call)
        answer = self.answers.pop(0)
        if isinstance(answer, TelephonyError):
            raise answer
        return answer


def claim(request_id: int, attempt: int = 1) -> Claim:
    return Claim(
        request_id=request_id,
        attempt=attempt,
        to="+15555550101",
        purpose="fraud_alert",
        transaction_id=7,
        claimed_at=datetime.now(UTC),
    )


async def dispatch(queue: FakeQueue, placer: FakePlacer) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(run_dispatcher, queue, placer, SETTINGS)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()


async def test_a_claim_is_placed_with_archers_urls_and_its_sid_written_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue([claim(3, attempt=2)])
    placer = FakePlacer(["CA" + "1" * 32])
    await dispatch(queue, placer)
    [sent] = placer.sent
    assert sent == OutgoingCall(
        to="+15555550101",
        from_number="+15005550006",
        answer_url="https://archer.example.com/twilio/outbound/3/2/answer",
        status_callback="https://archer.example.com/twilio/outbound/3/2/status",
        amd_callback="https://archer.example.com/twilio/outbound/3/2/amd",
        ring_timeout=30,
    )
    assert queue.placed == [(3, 2, "CA" + "1" * 32)]
    assert queue.ended == []
    assert queue.sweeps >= 1


async def test_a_refusal_is_a_failed_attempt_and_a_lost_answer_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue([claim(1), claim(2)])
    placer = FakePlacer(
        [
            TelephonyError("place_call refused by Twilio: bad number", code=21211, status=400),
            TelephonyError("place_call failed: ReadTimeout: timed out"),
        ]
    )
    await dispatch(queue, placer)
    assert queue.placed == []
    assert queue.ended == [(1, 1, "failed", None), (2, 1, "unknown", "placement_unknown")]


async def test_a_database_outage_is_survived(autojump_clock: trio.testing.MockClock) -> None:
    queue = FakeQueue([StoreError("down"), StoreError("down"), claim(5)])
    placer = FakePlacer(["CA" + "5" * 32])
    await dispatch(queue, placer)
    assert queue.placed == [(5, 1, "CA" + "5" * 32)]
