"""What an outbound call's agent session opens with: the purpose and the payment's facts.

Layer: pure (no I/O, no trio, no logging). The database adapter reads a ``PaymentFacts`` for the
call (``archer.db.call_facts``); this module turns it into the session's variables, which the
Cartesia clients send as Managed ``dynamic_variables`` (strings, numbers, booleans) or Line
``start`` metadata (strings only, ``as_metadata``).

Rules: only what the agent needs to ask "did you make this payment?": the purpose, the
transaction's id (to pass back to ``review_transaction``), the merchant, the amount and
currency, the time, and the paying card's last four digits. Never an account number, a
balance, the customer's name or a PIN: ``PaymentFacts`` has no field that could carry one.
Names follow Cartesia's rules for dynamic variables (1-64 of ``[A-Za-z0-9_]``, no ``system__``
or ``secret__`` prefix, at most 64); ``check_variables`` enforces them, so a renamed fact fails
here rather than at the agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import attrs

__all__ = [
    "MAX_VARIABLES",
    "PaymentFacts",
    "SessionValue",
    "as_metadata",
    "check_variables",
    "format_amount",
    "session_variables",
]

#: A Managed dynamic variable's value: a string, a number or a boolean.
SessionValue = str | int | float | bool

#: Cartesia takes at most this many dynamic variables.
MAX_VARIABLES: Final = 64
_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_RESERVED_PREFIXES: Final = ("system__", "secret__")


@attrs.frozen(slots=True)
class PaymentFacts:
    """The outbound request's purpose and the payment it is about, as the database has them."""

    purpose: str
    transaction_id: int
    #: The bank's description of the payment (the merchant, for a card payment).
    merchant: str
    #: Signed, from the account's side (a payment is negative); the agent hears its size.
    amount_cents: int
    #: ISO 4217, the paying account's.
    currency: str
    posted_at: datetime
    #: The last four digits of the card that paid; None when the payment names no card.
    card_last4: str | None


def format_amount(amount_cents: int) -> str:
    """The size of a payment in major units with two decimals: ``-41250`` is ``"412.50"``."""
    whole, cents = divmod(abs(amount_cents), 100)
    return f"{whole}.{cents:02d}"


def session_variables(facts: PaymentFacts) -> dict[str, SessionValue]:
    """The session's variables for ``facts`` (Managed ``dynamic_variables``).

    Raises:
        ValueError: a name would break Cartesia's rules (a bug here, not bad data).
    """
    posted = facts.posted_at
    if posted.utcoffset() is None:  # the database layer gives aware UTC; a naive one is UTC too
        posted = posted.replace(tzinfo=UTC)
    variables: dict[str, SessionValue] = {
        "call_purpose": facts.purpose,
        "transaction_id": facts.transaction_id,
        "merchant": facts.merchant,
        "amount": format_amount(facts.amount_cents),
        "currency": facts.currency,
        # ISO 8601 in UTC, to the minute: what a person is asked about.
        "transaction_time": posted.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        # Always present, so a prompt that names it never fails to start; "" when unknown.
        "card_last4": facts.card_last4 or "",
    }
    check_variables(variables)
    return variables


def check_variables(variables: Mapping[str, object]) -> None:
    """Refuse what Cartesia would refuse in a session's variables.

    Raises:
        ValueError: more than ``MAX_VARIABLES``, a name not 1-64 of ``[A-Za-z0-9_]`` or with a
            reserved prefix, or a value that is not a string, number or boolean.
    """
    if len(variables) > MAX_VARIABLES:
        raise ValueError(f"more than {MAX_VARIABLES} session variables")
    for name, value in variables.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"session variable name {name[:70]!r} is not 1-64 of [A-Za-z0-9_]")
        if name.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"session variable name {name!r} uses a reserved prefix")
        if not isinstance(value, str | int | float):  # bool is an int, and allowed
            raise ValueError(f"session variable {name} is not a string, number or boolean")


def as_metadata(variables: Mapping[str, SessionValue]) -> dict[str, str]:
    """The variables as Line ``start`` metadata: every value a string (``true``/``false``)."""
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in variables.items()
    }
