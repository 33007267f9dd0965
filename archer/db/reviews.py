"""``TransactionReviews`` on SQLAlchemy: a customer's answer about a payment, and the freeze.

Layer: database adapter (SQLAlchemy Core in worker threads, like ``archer.db.bank``).

Rules: one ``transaction_reviews`` row per transaction, the first answer (the unique key makes a
racing twin on another instance find it instead of adding one). A dispute (``recognised=false``)
freezes every active card of the account that paid, in the same database transaction as the
review row, so a review never exists without its freeze nor a freeze without its review. A lost
card stays lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import sqlalchemy as sa
import trio
from sqlalchemy.exc import IntegrityError

from archer.bank.ports import TransactionReview
from archer.db.clock import db_now
from archer.db.tables import accounts, cards, transaction_reviews, transactions
from archer.db.threads import run_in_thread

if TYPE_CHECKING:
    from archer.bank.ports import TransactionReviews

__all__ = ["SqlTransactionReviews"]

_SEPARATOR: Final = ","


@attrs.define
class SqlTransactionReviews:
    """Reviews on the call store's engine and thread limiter."""

    engine: sa.Engine
    limiter: trio.CapacityLimiter

    async def review(
        self, customer_id: int, transaction_id: int, *, recognised: bool, call_sid: str
    ) -> TransactionReview | None:
        """Record the answer (and freeze for a dispute); see ``TransactionReviews.review``.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the transaction finishes in its thread; it commits or not as a whole.
        """
        return await run_in_thread(
            "review_transaction",
            lambda: self.review_sync(
                customer_id, transaction_id, recognised=recognised, call_sid=call_sid
            ),
            limiter=self.limiter,
        )

    def review_sync(
        self, customer_id: int, transaction_id: int, *, recognised: bool, call_sid: str
    ) -> TransactionReview | None:
        """As ``review``, blocking.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed.
        """
        try:
            return self._review_once(customer_id, transaction_id, recognised, call_sid)
        except IntegrityError:
            # A twin recorded it first (another instance, the same moment): answer that one.
            earlier = self._earlier(customer_id, transaction_id)
            if earlier is None:
                raise
            return earlier

    def _review_once(
        self, customer_id: int, transaction_id: int, recognised: bool, call_sid: str
    ) -> TransactionReview | None:
        with self.engine.begin() as conn:
            account_id = conn.execute(
                sa.select(transactions.c.account_id)
                .join(accounts, accounts.c.id == transactions.c.account_id)
                .where(transactions.c.id == transaction_id, accounts.c.customer_id == customer_id)
            ).scalar_one_or_none()
            if account_id is None:
                return None
            earlier = self._earlier_in(conn, transaction_id)
            if earlier is not None:
                return earlier
            frozen: list[str] = []
            if not recognised:
                frozen = list(
                    conn.execute(
                        sa.update(cards)
                        .where(
                            cards.c.account_id == account_id,
                            cards.c.customer_id == customer_id,
                            cards.c.status == "active",
                        )
                        .values(status="frozen", updated_at=db_now())
                        .returning(cards.c.last4)
                    ).scalars()
                )
                frozen.sort()
            conn.execute(
                sa.insert(transaction_reviews).values(
                    transaction_id=transaction_id,
                    customer_id=customer_id,
                    call_sid=call_sid,
                    recognised=recognised,
                    cards_frozen=_SEPARATOR.join(frozen),
                    reviewed_at=db_now(),
                )
            )
        return TransactionReview(transaction_id, recognised, tuple(frozen), new=True)

    def _earlier(self, customer_id: int, transaction_id: int) -> TransactionReview | None:
        with self.engine.connect() as conn:
            return self._earlier_in(conn, transaction_id)

    @staticmethod
    def _earlier_in(conn: sa.Connection, transaction_id: int) -> TransactionReview | None:
        row = conn.execute(
            sa.select(transaction_reviews.c.recognised, transaction_reviews.c.cards_frozen).where(
                transaction_reviews.c.transaction_id == transaction_id
            )
        ).one_or_none()
        if row is None:
            return None
        cards_frozen = tuple(c for c in row.cards_frozen.split(_SEPARATOR) if c)
        return TransactionReview(transaction_id, bool(row.recognised), cards_frozen, new=False)


if TYPE_CHECKING:

    def _implements_the_port(reviews: SqlTransactionReviews) -> TransactionReviews:
        return reviews
