"""``TransactionReviews`` on SQLAlchemy: a customer's answer about a payment, and the freeze.

Layer: database adapter (SQLAlchemy Core in worker threads, like ``archer.db.bank``).

Rules: one ``transaction_reviews`` row per transaction, the first answer (the unique key makes a
racing twin on another instance find it instead of adding one). A dispute (``recognised=false``)
freezes the card that made the payment (``transactions.card_id``), or, for a payment that names
no card, every active card of the account that paid (``freeze_scope`` says which), in the same
database transaction as the review row, so a review never exists without its freeze nor a
freeze without its review. A lost card stays lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import sqlalchemy as sa
import trio
from sqlalchemy.exc import IntegrityError

from archer.bank.ports import FreezeScope, TransactionReview
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
            paid = conn.execute(
                sa.select(transactions.c.account_id, transactions.c.card_id)
                .join(accounts, accounts.c.id == transactions.c.account_id)
                .where(transactions.c.id == transaction_id, accounts.c.customer_id == customer_id)
            ).one_or_none()
            if paid is None:
                return None
            earlier = self._earlier_in(conn, transaction_id)
            if earlier is not None:
                return earlier
            frozen: list[str] = []
            scope: FreezeScope = "none"
            if not recognised:
                # The card that paid, when the bank knows it; else (a payment from before
                # card_id, or one without a card) every active card of the paying account.
                scope = "account" if paid.card_id is None else "card"
                which = (
                    cards.c.account_id == paid.account_id
                    if paid.card_id is None
                    else cards.c.id == paid.card_id
                )
                frozen = list(
                    conn.execute(
                        sa.update(cards)
                        .where(
                            which, cards.c.customer_id == customer_id, cards.c.status == "active"
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
                    freeze_scope=scope,
                    reviewed_at=db_now(),
                )
            )
        return TransactionReview(transaction_id, recognised, tuple(frozen), new=True, scope=scope)

    def _earlier(self, customer_id: int, transaction_id: int) -> TransactionReview | None:
        with self.engine.connect() as conn:
            return self._earlier_in(conn, transaction_id)

    @staticmethod
    def _earlier_in(conn: sa.Connection, transaction_id: int) -> TransactionReview | None:
        row = conn.execute(
            sa.select(
                transaction_reviews.c.recognised,
                transaction_reviews.c.cards_frozen,
                transaction_reviews.c.freeze_scope,
            ).where(transaction_reviews.c.transaction_id == transaction_id)
        ).one_or_none()
        if row is None:
            return None
        cards_frozen = tuple(c for c in row.cards_frozen.split(_SEPARATOR) if c)
        return TransactionReview(
            transaction_id,
            bool(row.recognised),
            cards_frozen,
            new=False,
            scope=_scope(row.freeze_scope),
        )


def _scope(text: str) -> FreezeScope:
    # The column's check allows exactly these three.
    return "card" if text == "card" else "account" if text == "account" else "none"


if TYPE_CHECKING:

    def _implements_the_port(reviews: SqlTransactionReviews) -> TransactionReviews:
        return reviews
