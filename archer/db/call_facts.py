"""``CallFacts`` on SQLAlchemy: what an outbound call is about, read when its stream starts.

Layer: database adapter (SQLAlchemy Core in worker threads, like ``archer.db.reviews``).

Rules: the call is found by its CallSid among the outbound attempts (the answer webhook wrote
it there before the stream's token was minted); its request names the purpose and the
transaction. Only the facts the agent needs are selected (``archer.call.session_facts``): the
merchant, amount, currency, time and the paying card's last four digits. The account's number,
its balance and the customer's name are never read here, so they cannot travel further.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import sqlalchemy as sa
import trio

from archer.call.session_facts import PaymentFacts
from archer.db.tables import accounts, cards, outbound_attempts, outbound_requests, transactions
from archer.db.threads import run_in_thread

if TYPE_CHECKING:
    from archer.call.ports import CallFacts

__all__ = ["SqlCallFacts"]


@attrs.define
class SqlCallFacts:
    """Outbound calls' facts on the call store's engine and thread limiter."""

    engine: sa.Engine
    limiter: trio.CapacityLimiter

    async def payment_facts(self, call_sid: str) -> PaymentFacts | None:
        """The facts of the outbound call ``call_sid`` (see ``CallFacts.payment_facts``).

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the read finishes in its thread; nothing is written.
        """
        return await run_in_thread(
            "payment_facts", lambda: self.payment_facts_sync(call_sid), limiter=self.limiter
        )

    def payment_facts_sync(self, call_sid: str) -> PaymentFacts | None:
        """As ``payment_facts``, blocking.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    outbound_requests.c.purpose,
                    transactions.c.id,
                    transactions.c.description,
                    transactions.c.amount_cents,
                    transactions.c.posted_at,
                    accounts.c.currency,
                    cards.c.last4.label("card_last4"),
                )
                .select_from(outbound_attempts)
                .join(outbound_requests, outbound_requests.c.id == outbound_attempts.c.request_id)
                .join(transactions, transactions.c.id == outbound_requests.c.transaction_id)
                .join(accounts, accounts.c.id == transactions.c.account_id)
                .outerjoin(cards, cards.c.id == transactions.c.card_id)
                .where(outbound_attempts.c.call_sid == call_sid)
                .limit(1)
            ).one_or_none()
        if row is None:
            return None
        return PaymentFacts(
            purpose=str(row.purpose),
            transaction_id=int(row.id),
            merchant=str(row.description),
            amount_cents=int(row.amount_cents),
            currency=str(row.currency),
            posted_at=row.posted_at,
            card_last4=None if row.card_last4 is None else str(row.card_last4),
        )


if TYPE_CHECKING:

    def _implements_the_port(facts: SqlCallFacts) -> CallFacts:
        return facts
