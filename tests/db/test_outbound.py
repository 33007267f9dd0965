"""The outbound queue (``archer.db.outbound``) on SQLite and PostgreSQL.

Keys are stored only as hashes; idempotent requests find their first row; the claim keeps the
pace, the cap and the calling window on the database's clock; two instances on one PostgreSQL
claim every request exactly once, spaced by ``1/OUTBOUND_CPS``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from time import sleep
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from archer.call.outbound import CallingWindow, CallRequest, UnknownTransactionError
from archer.db.engine import init_schema
from archer.db.outbound import (
    Claim,
    KeyNameTakenError,
    SqlOutbound,
    hash_key,
)
from archer.db.seed import seed_demo_bank
from archer.db.tables import metadata, outbound_requests, transactions


@pytest.fixture
def outbound(database_url: str) -> Iterator[SqlOutbound]:
    queue = SqlOutbound.open(database_url, pool_size=4)
    init_schema(queue.engine)
    seed_demo_bank(queue.engine)
    try:
        yield queue
    finally:
        queue.close()


def _transaction_id(queue: SqlOutbound) -> int:
    with queue.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.min(transactions.c.id))).scalar_one())


def _request(queue: SqlOutbound, to: str = "+15555550101") -> CallRequest:
    return CallRequest(to=to, purpose="fraud_alert", transaction_id=_transaction_id(queue))


def _every_text_in_database(queue: SqlOutbound) -> str:
    with queue.engine.connect() as conn:
        return "\n".join(
            repr(row) for table in metadata.sorted_tables for row in conn.execute(table.select())
        )


def test_a_key_is_stored_only_as_its_hash(outbound: SqlOutbound) -> None:
    key = outbound.create_key("fraud-engine")
    dump = _every_text_in_database(outbound)
    assert key not in dump
    assert key[8:24] not in dump  # not even a piece of it
    assert hash_key(key) in dump
    listed = outbound.list_keys()
    assert [k.name for k in listed] == ["fraud-engine"]
    assert key not in repr(listed)
    assert hash_key(key) not in repr(listed)


def test_a_key_name_is_used_once(outbound: SqlOutbound) -> None:
    outbound.create_key("fraud-engine")
    with pytest.raises(KeyNameTakenError, match="fraud-engine"):
        outbound.create_key("fraud-engine")


async def test_a_revoked_key_no_longer_opens(outbound: SqlOutbound) -> None:
    key = outbound.create_key("fraud-engine")
    other = outbound.create_key("other")
    assert await outbound.key_id(key) is not None
    assert outbound.revoke_key("fraud-engine") is True
    assert await outbound.key_id(key) is None
    assert outbound.revoke_key("fraud-engine") is False  # already revoked
    assert outbound.revoke_key("nobody") is False
    assert await outbound.key_id(other) is not None
    assert await outbound.key_id(key + "x") is None
    [revoked, live] = outbound.list_keys()
    assert revoked.revoked_at is not None
    assert live.revoked_at is None


def test_the_same_idempotency_key_queues_once(outbound: SqlOutbound) -> None:
    key_id = None  # requests from the command line have no key
    first = outbound.enqueue_sync(_request(outbound), api_key_id=key_id, idempotency_key="k-1")
    again = outbound.enqueue_sync(_request(outbound), api_key_id=key_id, idempotency_key="k-1")
    other = outbound.enqueue_sync(_request(outbound), api_key_id=key_id, idempotency_key="k-2")
    plain = outbound.enqueue_sync(_request(outbound), api_key_id=key_id, idempotency_key=None)
    assert first.created
    assert not again.created
    assert (again.id, again.status) == (first.id, "queued")
    assert len({first.id, other.id, plain.id}) == 3
    with outbound.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbound_requests)).scalar() == 3


def test_an_unknown_transaction_writes_nothing(outbound: SqlOutbound) -> None:
    request = CallRequest(to="+15555550101", purpose="fraud_alert", transaction_id=987654321)
    with pytest.raises(UnknownTransactionError, match="987654321"):
        outbound.enqueue_sync(request, api_key_id=None, idempotency_key="k")
    with outbound.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbound_requests)).scalar() == 0


def test_a_claim_waits_for_the_pace(outbound: SqlOutbound) -> None:
    for _ in range(2):
        outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    first = outbound.claim_sync("a", cps=0.2, max_active=10)
    assert first is not None
    assert first.attempt == 1
    # The next send is five seconds of the database's clock away.
    assert outbound.claim_sync("a", cps=0.2, max_active=10) is None
    view = outbound.view_sync(first.request_id)
    assert view is not None
    assert view.status == "dialing"
    assert [(a.attempt, a.call_sid, a.outcome) for a in view.attempts] == [(1, None, None)]


def paced_claim(outbound: SqlOutbound, instance: str, *, max_active: int) -> Claim | None:
    """A claim at 1000 calls a second, once the 1 ms pace of any claim before it has passed on
    the database's clock: on a fast machine the next claim could otherwise be refused for the
    pace, not for the reason the test checks."""
    sleep(0.01)
    return outbound.claim_sync(instance, cps=1000, max_active=max_active)


def test_a_claim_respects_the_cap_on_active_calls(outbound: SqlOutbound) -> None:
    for _ in range(3):
        outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    assert outbound.claim_sync("a", cps=1000, max_active=2) is not None
    assert paced_claim(outbound, "a", max_active=2) is not None
    assert paced_claim(outbound, "a", max_active=2) is None


def _window_without(now: datetime) -> CallingWindow:
    """A two-hour window that ends an hour before ``now`` (so ``now`` is outside it)."""
    start = (now - timedelta(hours=3)).time().replace(second=0, microsecond=0)
    end = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    return CallingWindow(start=start, end=end, zone=ZoneInfo("UTC"))


def test_nothing_is_claimed_outside_the_calling_window(outbound: SqlOutbound) -> None:
    queued = outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    closed = _window_without(datetime.now(UTC))
    assert outbound.claim_sync("a", cps=1000, max_active=5, window=closed) is None
    view = outbound.view_sync(queued.id)
    assert view is not None
    assert view.status == "queued"
    assert view.attempts == ()
    all_day = CallingWindow(start=time(0, 0), end=None, zone=ZoneInfo("Pacific/Kiritimati"))
    assert outbound.claim_sync("a", cps=1000, max_active=5, window=all_day) is not None


def test_a_missed_call_is_retried_until_the_last_attempt(outbound: SqlOutbound) -> None:
    queued = outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    outcomes = ["no-answer", "busy"]
    for attempt, outcome in enumerate(outcomes, start=1):
        claim = paced_claim(outbound, "a", max_active=5)
        assert claim is not None
        assert claim.attempt == attempt
        outbound.attempt_placed_sync(claim.request_id, attempt, f"CA{attempt:032d}")
        status = outbound.attempt_ended_sync(
            claim.request_id, attempt, outcome, retry_delay=0.001, max_attempts=3
        )
        assert status == "queued"
        # The retry is due 1 ms later on the database's clock: wait past it too.
        sleep(0.01)
    claim = paced_claim(outbound, "a", max_active=5)
    assert claim is not None
    assert claim.attempt == 3
    outbound.attempt_placed_sync(claim.request_id, 3, "CA" + "3" * 32)
    status = outbound.attempt_ended_sync(
        claim.request_id, 3, "completed", retry_delay=0.001, max_attempts=3, answered_by="human"
    )
    assert status == "completed"
    # The same end reported twice changes nothing.
    assert (
        outbound.attempt_ended_sync(claim.request_id, 3, "busy", retry_delay=0, max_attempts=3)
        == "completed"
    )
    view = outbound.view_sync(queued.id)
    assert view is not None
    assert (view.status, view.answered_by, view.end_reason) == ("completed", "human", "completed")
    assert [(a.attempt, a.outcome) for a in view.attempts] == [
        (1, "no-answer"),
        (2, "busy"),
        (3, "completed"),
    ]
    assert all(a.call_sid and a.ended_at for a in view.attempts)


def test_a_missed_call_fails_after_the_last_attempt(outbound: SqlOutbound) -> None:
    outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    claim = outbound.claim_sync("a", cps=1000, max_active=5)
    assert claim is not None
    status = outbound.attempt_ended_sync(
        claim.request_id, 1, "no-answer", retry_delay=0.001, max_attempts=1
    )
    assert status == "failed"
    view = outbound.view_sync(claim.request_id)
    assert view is not None
    assert view.end_reason == "no-answer"


def test_a_retry_waits_for_its_delay(outbound: SqlOutbound) -> None:
    outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    claim = outbound.claim_sync("a", cps=1000, max_active=5)
    assert claim is not None
    outbound.attempt_ended_sync(claim.request_id, 1, "busy", retry_delay=600, max_attempts=3)
    assert paced_claim(outbound, "a", max_active=5) is None


def test_a_claim_whose_instance_died_is_not_redialled(outbound: SqlOutbound) -> None:
    outbound.enqueue_sync(_request(outbound), api_key_id=None, idempotency_key=None)
    claim = outbound.claim_sync("dead-instance", cps=1000, max_active=5)
    assert claim is not None
    # No lease row for "dead-instance": it is dead.
    assert outbound.abandon_lost_sync(lease_seconds=15) == [claim.request_id]
    assert outbound.abandon_lost_sync(lease_seconds=15) == []
    view = outbound.view_sync(claim.request_id)
    assert view is not None
    assert (view.status, view.end_reason) == ("failed", "instance_lost")
    assert [a.outcome for a in view.attempts] == ["instance_lost"]
    assert paced_claim(outbound, "other", max_active=5) is None


def test_two_instances_claim_each_request_once_at_the_shared_pace(postgres_url: str) -> None:
    queues = [SqlOutbound.open(postgres_url, pool_size=2) for _ in range(2)]
    try:
        init_schema(queues[0].engine)
        seed_demo_bank(queues[0].engine)
        for n in range(10):
            queues[0].enqueue_sync(
                _request(queues[0], to=f"+1555555{n:04d}"), api_key_id=None, idempotency_key=None
            )
        claims: list[tuple[str, Claim]] = []
        lock = threading.Lock()
        deadline = datetime.now(UTC) + timedelta(seconds=30)

        def dispatch(instance: str, queue: SqlOutbound) -> None:
            while datetime.now(UTC) < deadline:
                with lock:
                    if len(claims) == 10:
                        return
                claim = queue.claim_sync(instance, cps=2, max_active=100)
                if claim is not None:
                    with lock:
                        claims.append((instance, claim))
                else:
                    threading.Event().wait(0.01)

        threads = [
            threading.Thread(target=dispatch, args=(f"instance-{i}", q))
            for i, q in enumerate(queues)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        requests = sorted(claim.request_id for _, claim in claims)
        assert len(requests) == 10
        assert len(set(requests)) == 10
        moments = sorted(claim.claimed_at for _, claim in claims)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
        assert min(gaps) >= 0.45, gaps
    finally:
        for queue in queues:
            queue.close()
