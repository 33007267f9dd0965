"""``archer.db.call_facts`` on SQLite and PostgreSQL: an outbound call's facts, by CallSid.

The stream of an answered outbound call finds its request through the attempt that carries its
CallSid; the facts are the payment's (merchant, amount, currency, time, the paying card's last
four digits), never the account's number or balance, nor the customer's name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import trio

from archer.call.outbound import CallRequest
from archer.db.call_facts import SqlCallFacts
from archer.db.engine import init_schema
from archer.db.outbound import SqlOutbound
from archer.db.seed import seed_demo_bank
from archer.db.tables import transactions
from archer.errors import StoreError

CALL_SID = "CA" + "5" * 32


@pytest.fixture
def outbound(database_url: str) -> Iterator[SqlOutbound]:
    queue = SqlOutbound.open(database_url, pool_size=2)
    init_schema(queue.engine)
    seed_demo_bank(queue.engine)
    try:
        yield queue
    finally:
        queue.close()


def _placed(queue: SqlOutbound, description: str) -> int:
    """Queue, claim and place a call about the payment ``description``; its transaction id."""
    with queue.engine.connect() as conn:
        transaction_id = int(
            conn.execute(
                sa.select(transactions.c.id).where(transactions.c.description == description)
            ).scalar_one()
        )
    queue.enqueue_sync(
        CallRequest(to="+15555550101", purpose="fraud_alert", transaction_id=transaction_id),
        api_key_id=None,
        idempotency_key=None,
    )
    claim = queue.claim_sync("instance-a", cps=100, max_active=5)
    assert claim is not None
    queue.attempt_placed_sync(claim.request_id, claim.attempt, CALL_SID)
    return transaction_id


async def test_the_facts_of_a_placed_call_are_the_payments(outbound: SqlOutbound) -> None:
    transaction_id = await trio.to_thread.run_sync(_placed, outbound, "Blue Bottle Coffee")
    facts = await SqlCallFacts(outbound.engine, trio.CapacityLimiter(1)).payment_facts(CALL_SID)
    assert facts is not None
    assert (facts.purpose, facts.transaction_id, facts.merchant) == (
        "fraud_alert",
        transaction_id,
        "Blue Bottle Coffee",
    )
    assert (facts.amount_cents, facts.currency, facts.card_last4) == (-575, "USD", "2207")
    assert facts.posted_at.utcoffset() is not None
    # Nothing about the account or the customer is carried (4821 is the paying account).
    assert "4821" not in repr(facts)
    assert "Maya" not in repr(facts)


async def test_a_payment_without_a_card_has_no_last_four(outbound: SqlOutbound) -> None:
    await trio.to_thread.run_sync(_placed, outbound, "Rent - Parkview Apartments")
    facts = await SqlCallFacts(outbound.engine, trio.CapacityLimiter(1)).payment_facts(CALL_SID)
    assert facts is not None
    assert facts.card_last4 is None


async def test_a_call_archer_did_not_place_has_no_facts(outbound: SqlOutbound) -> None:
    facts = SqlCallFacts(outbound.engine, trio.CapacityLimiter(1))
    assert await facts.payment_facts("CA" + "0" * 32) is None


async def test_a_database_failure_is_a_store_error(outbound: SqlOutbound) -> None:
    broken = sa.create_engine("sqlite:////nonexistent-dir/archer.db")
    with pytest.raises(StoreError, match="payment_facts"):
        await SqlCallFacts(broken, trio.CapacityLimiter(1)).payment_facts(CALL_SID)
    broken.dispose()
