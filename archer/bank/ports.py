"""The bank's data as the tools see it: one port, frozen answers.

Layer: ports (``typing.Protocol`` and frozen records only). ``archer.db.bank.SqlBankStore``
satisfies it against the database; tests may fake it. Every method is scoped to one customer:
there is no way to ask for another customer's account through this port.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import attrs

AccountType = Literal["checking", "savings", "credit"]
CardStatus = Literal["active", "frozen", "lost"]


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
