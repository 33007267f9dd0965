"""The bank's data as the tools see it: one port, frozen answers.

Layer: ports (``typing.Protocol`` and frozen records only). ``archer.db.bank.SqlBankStore``
satisfies it against the database; tests may fake it. Every method is scoped to one customer:
there is no way to ask for another customer's account through this port.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, Protocol

import attrs

AccountType = Literal["checking", "savings", "credit"]
CardStatus = Literal["active", "frozen", "lost"]
#: What a disputed payment froze (``transaction_reviews.freeze_scope``).
FreezeScope = Literal["card", "account", "none"]


@attrs.frozen(slots=True)
class Account:
    """One account of the customer (balances in integer minor units)."""

    account_type: AccountType
    last4: str
    balance_cents: int
    currency: str
    status: str


@attrs.frozen(slots=True)
class Transaction:
    """One posted transaction (negative ``amount_cents`` is money out)."""

    account_type: AccountType
    account_last4: str
    posted_at: datetime
    amount_cents: int
    currency: str
    description: str


@attrs.frozen(slots=True)
class PinPolicy:
    """How many failed PIN verifications a customer may have before verification locks.

    ``max_failures`` failures within ``lockout_seconds`` (counted across calls and instances)
    lock verification for ``lockout_seconds`` (``PIN_MAX_FAILURES``, ``PIN_LOCKOUT_SECONDS``).
    """

    max_failures: int = 5
    lockout_seconds: float = 900.0


#: ``PIN_MAX_FAILURES`` and ``PIN_LOCKOUT_SECONDS`` as shipped.
DEFAULT_PIN_POLICY: Final = PinPolicy()


@attrs.frozen(slots=True)
class PinLock:
    """A customer's PIN verification state as the database holds it now."""

    #: Verification is refused until ``locked_until`` (the database's clock).
    locked: bool
    #: Failures inside the current window (0 when not asked to count).
    failures: int = 0
    locked_until: datetime | None = None
    #: This failure is the one that locked it (a lock-out row was written).
    newly_locked: bool = False


@attrs.frozen(slots=True)
class CardChange:
    """What a freeze/unfreeze did to one card: its status before and after."""

    last4: str
    previous_status: CardStatus
    status: CardStatus


class BankStore(Protocol):
    """Read and change one customer's accounts and cards.

    Every method raises ``StoreError`` when the database is unavailable.
    """

    async def pin_hash(self, customer_id: int) -> str | None:
        """The customer's stored PIN hash (None: no PIN set, or no such customer)."""
        ...

    async def pin_lock(self, customer_id: int) -> PinLock:
        """Whether the customer's PIN verification is locked out now (the database's clock)."""
        ...

    async def record_pin_failure(
        self, customer_id: int, call_sid: str, policy: PinPolicy
    ) -> PinLock:
        """Record one failed verification and return the state it leaves, atomically.

        Writes a ``pin_failures`` row (unless already locked, when nothing is counted) and, if
        this failure brings the window's count to ``policy.max_failures``, a ``pin_lockouts``
        row. Concurrent failures of one customer (any instance) are serialised.
        """
        ...

    async def accounts(self, customer_id: int, account_type: AccountType | None) -> list[Account]:
        """The customer's accounts, of one type if given, ordered by type then last4."""
        ...

    async def recent_transactions(
        self, customer_id: int, account_type: AccountType | None, limit: int
    ) -> list[Transaction]:
        """The customer's newest transactions first, across matching accounts, at most ``limit``."""
        ...

    async def set_card_status(
        self, customer_id: int, last4: str, status: Literal["active", "frozen"]
    ) -> CardChange | None:
        """Set one card of the customer to ``status``; idempotent.

        A ``lost`` card is never changed (the answer shows it unchanged). None when the
        customer has no card ending in ``last4``. ``cards.updated_at`` moves only on a change.
        """
        ...


@attrs.frozen(slots=True)
class TransactionReview:
    """The customer's answer about one payment, as recorded (the first answer stands)."""

    transaction_id: int
    recognised: bool
    #: Last four digits of the cards frozen for the dispute (empty when recognised).
    cards_frozen: tuple[str, ...]
    #: False when this review was recorded before (by this call or another).
    new: bool
    #: What a dispute froze: ``card`` (the card that paid), ``account`` (the payment named no
    #: card, so the paying account's active cards) or ``none`` (recognised).
    scope: FreezeScope = "none"


class TransactionReviews(Protocol):
    """Record a customer's answer about a payment (issue 22: outbound fraud alerts)."""

    async def review(
        self, customer_id: int, transaction_id: int, *, recognised: bool, call_sid: str
    ) -> TransactionReview | None:
        """Record the answer; for ``recognised=False`` freeze the card that made the payment (or,
        when the payment names no card, the paying account's active cards) in the same
        transaction. Idempotent: a transaction already reviewed answers its first
        review (``new=False``) and changes nothing. None: the customer has no such transaction.

        Raises:
            StoreError: the database is unavailable.
        """
        ...
