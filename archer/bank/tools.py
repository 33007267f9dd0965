"""The banking tools the agent may call, and the policy that guards them.

Layer: domain (bank). Each tool is an async function of ``(ToolContext, arguments)``; it reaches
the bank's data only through the ``BankStore`` port and the phone line only through the
``TelephonyControl`` port and the context's ``CallControl``.

Policy:
- Anything that discloses account data or changes something needs the caller verified by PIN in
  *this* call; otherwise the result is an error telling the agent to verify first.
- A caller with no customer record can only be transferred or have the call ended.
- ``verify_caller`` answers only "verified" or "not verified": it never says whether the number
  is a customer or has a PIN, and takes as long either way. Three failures lock it for the call;
  ``PIN_MAX_FAILURES`` within ``PIN_LOCKOUT_SECONDS`` lock it for the customer, across calls and
  instances, even against the right PIN (``archer.bank.verification``).
- Refusals are ``ToolError``s (the agent hears the message); results are JSON objects with
  amounts in integer minor units and their currency.
- ``collect_pin`` (issue 21) takes the PIN on the keypad, withheld from the agent
  (``archer.call.keypad``), and checks it through the same ``PinVerifier`` and per-call count
  as ``verify_caller``; the agent hears only the outcome, never a digit or how many were keyed.
  ``PIN_ENTRY`` says which of the two may be used: ``keypad`` (the default) refuses
  ``verify_caller``, so no agent can be talked into taking a PIN aloud. Both live in
  ``archer.bank.pin_tools``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal

import structlog

from archer.bank.definitions import ToolDefinition, load_definitions
from archer.bank.pin_tools import (
    PIN_CHECK_TIMEOUT,
    capture_cancelled_outcome,
    collect_pin_tool,
    verify_caller_tool,
)
from archer.bank.ports import DEFAULT_PIN_POLICY, PinPolicy
from archer.bank.verification import PinVerifier
from archer.call.keypad import EntryRules
from archer.call.tools import Tool, ToolContext, ToolFunction, ToolRegistry, ToolResult
from archer.errors import TelephonyError, ToolError
from archer.logs import mask_phone

if TYPE_CHECKING:
    from archer.bank.ports import AccountType, BankStore, TransactionReviews
    from archer.call.ports import TelephonyControl

log = structlog.get_logger(__name__)

#: Transactions a caller may hear at once.
MAX_TRANSACTIONS: Final = 10
DEFAULT_TRANSACTIONS: Final = 5
#: Waiting for a lead-in or a goodbye to play takes longer than a database query.
CALL_CONTROL_TIMEOUT: Final = 30.0

NOT_VERIFIED: Final = (
    "The caller is not verified in this call. Ask for their PIN and call verify_caller first."
)
NO_CUSTOMER: Final = (
    "There is no customer record for this caller, so account tools are not available. "
    "Offer to transfer them to a colleague, or end the call."
)


def bank_tools(
    bank: BankStore,
    telephony: TelephonyControl,
    *,
    human_agent_number: str,
    transfer_allowlist: frozenset[str] = frozenset(),
    definitions: tuple[ToolDefinition, ...] | None = None,
    pin_policy: PinPolicy = DEFAULT_PIN_POLICY,
    reviews: TransactionReviews | None = None,
    pin_entry: str = "keypad",
    entry_rules: EntryRules | None = None,
    recording_pause: str | None = None,
) -> ToolRegistry:
    """The registry of banking tools, each checked against its definition's parameters.

    ``pin_entry`` (``PIN_ENTRY``): which way of giving a PIN is allowed; ``entry_rules``
    (``PIN_MAX_DIGITS``, ``PIN_DIGIT_TIMEOUT``, ``PIN_ENTRY_TIMEOUT``) end a keypad entry.
    ``recording_pause`` (``RECORDING_PAUSE_BEHAVIOR`` when ``RECORDING=dual``, else None): a
    keypad entry pauses the call's recording with it first, and is refused if it cannot.
    """
    verifier = PinVerifier(bank, pin_policy)
    rules = entry_rules if entry_rules is not None else EntryRules()
    functions: dict[str, tuple[ToolFunction, float | None]] = {
        "verify_caller": (verify_caller_tool(verifier, allowed=pin_entry != "keypad"), None),
        # The entry, then a PBKDF2 check and a database write or two.
        "collect_pin": (
            collect_pin_tool(
                verifier,
                rules,
                allowed=pin_entry != "agent",
                telephony=telephony,
                recording_pause=recording_pause,
            ),
            rules.entry_timeout + PIN_CHECK_TIMEOUT,
        ),
        "get_account_balance": (_get_account_balance(bank), None),
        "list_recent_transactions": (_list_recent_transactions(bank), None),
        "freeze_card": (_set_card_status(bank, "frozen"), None),
        "unfreeze_card": (_set_card_status(bank, "active"), None),
        "transfer_to_human": (
            _transfer_to_human(telephony, human_agent_number, transfer_allowlist),
            CALL_CONTROL_TIMEOUT,
        ),
        "end_call": (_end_call(telephony), CALL_CONTROL_TIMEOUT),
        "review_transaction": (_review_transaction(reviews), None),
    }
    tools = []
    for definition in definitions if definitions is not None else load_definitions():
        if definition.name not in functions:
            raise ToolError(f"tool {definition.name!r} is defined but not implemented")
        run, timeout = functions[definition.name]
        tools.append(
            Tool(
                definition.name,
                run,
                timeout=timeout,
                secret_arguments=frozenset({"pin"}),
                parameters=definition.parameters,
                side_effect=definition.name in SIDE_EFFECT_TOOLS,
                # A keypad entry the call's end cuts off is finished in the record (issue 21).
                cancelled_outcome=(
                    capture_cancelled_outcome if definition.name == "collect_pin" else None
                ),
            )
        )
    return ToolRegistry.of(*tools)


#: Tools that change something outside the call: audited before they act (``Tool.side_effect``).
SIDE_EFFECT_TOOLS: Final = frozenset(
    {"freeze_card", "unfreeze_card", "transfer_to_human", "review_transaction"}
)


def _verified_customer(context: ToolContext) -> int:
    """The caller's customer id if they may see and change account data; else refuse."""
    if context.customer_id is None:
        raise ToolError(NO_CUSTOMER)
    if not context.verification.verified:
        raise ToolError(NOT_VERIFIED)
    return context.customer_id


def _no_account(account_type: AccountType | None) -> str:
    return (
        f"The caller has no {account_type} account."
        if account_type
        else "The caller has no account."
    )


def _account_type(arguments: Mapping[str, object]) -> AccountType | None:
    value = arguments.get("account_type")
    if value is None:
        return None
    assert value in ("checking", "savings", "credit")  # the schema's enum guarantees it
    return value


def _get_account_balance(bank: BankStore) -> ToolFunction:
    async def get_account_balance(
        context: ToolContext, arguments: Mapping[str, object]
    ) -> ToolResult:
        customer_id = _verified_customer(context)
        account_type = _account_type(arguments)
        accounts = await bank.accounts(customer_id, account_type)
        if not accounts:
            raise ToolError(_no_account(account_type))
        return ToolResult(
            {
                "accounts": [
                    {
                        "account_type": account.account_type,
                        "last4": account.last4,
                        "balance_cents": account.balance_cents,
                        "currency": account.currency,
                    }
                    for account in accounts
                ]
            }
        )

    return get_account_balance


def _list_recent_transactions(bank: BankStore) -> ToolFunction:
    async def list_recent_transactions(
        context: ToolContext, arguments: Mapping[str, object]
    ) -> ToolResult:
        customer_id = _verified_customer(context)
        account_type = _account_type(arguments)
        limit = arguments.get("limit", DEFAULT_TRANSACTIONS)
        assert isinstance(limit, int)  # the schema guarantees it
        if limit < 1:
            raise ToolError("limit must be at least 1.")
        if not await bank.accounts(customer_id, account_type):
            raise ToolError(_no_account(account_type))
        transactions = await bank.recent_transactions(
            customer_id, account_type, min(limit, MAX_TRANSACTIONS)
        )
        return ToolResult(
            {
                "transactions": [
                    {
                        "account_type": item.account_type,
                        "account_last4": item.account_last4,
                        "posted_at": item.posted_at.date().isoformat(),
                        "amount_cents": item.amount_cents,
                        "currency": item.currency,
                        "description": item.description,
                    }
                    for item in transactions
                ]
            }
        )

    return list_recent_transactions


def _set_card_status(bank: BankStore, status: Literal["active", "frozen"]) -> ToolFunction:
    async def set_card_status(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        customer_id = _verified_customer(context)
        last4 = str(arguments["last4"]).strip()
        if not (last4.isdigit() and len(last4) == 4):
            raise ToolError("last4 must be the last four digits of the card.")
        change = await bank.set_card_status(customer_id, last4, status)
        if change is None:
            raise ToolError(f"The caller has no card ending in {last4}.")
        if change.status == "lost":
            raise ToolError(
                f"The card ending in {last4} is reported lost; it stays blocked. "
                "Offer a transfer to a colleague for a replacement."
            )
        log.info("bank.card_status", last4=last4, status=change.status)
        return ToolResult(
            {
                "last4": last4,
                "status": change.status,
                "changed": change.previous_status != change.status,
            }
        )

    return set_card_status


def _transfer_to_human(
    telephony: TelephonyControl, human_agent_number: str, allowed: frozenset[str]
) -> ToolFunction:
    async def transfer_to_human(
        context: ToolContext, arguments: Mapping[str, object]
    ) -> ToolResult:
        # An agent may name a number (Line's transfer_call); only allow-listed ones are dialled.
        asked = arguments.get("number")
        number = asked if isinstance(asked, str) and asked in allowed else human_agent_number
        if asked is not None and number != asked:
            log.warning("bank.transfer_number_not_allowed", asked=mask_phone(str(asked)))
        if not number:
            raise ToolError("Transfers are not available on this line; offer to end the call.")
        if not await context.control.wait_until_heard():
            raise ToolError(
                "The caller interrupted before the transfer; it was not made. "
                "Ask whether they still want to speak to a colleague."
            )
        context.control.expect("transferred", "transferred")
        try:
            await telephony.transfer(context.call_sid, number)
        except TelephonyError as exc:
            context.control.withdraw()
            log.error("bank.transfer_failed", error=str(exc))
            raise ToolError(
                "The transfer did not go through; apologise and offer to retry."
            ) from exc
        log.info("bank.transferred", to=mask_phone(number), reason=str(arguments["reason"])[:200])
        context.control.end("transferred", "transferred")
        return ToolResult({"transferred": True})

    return transfer_to_human


def _end_call(telephony: TelephonyControl) -> ToolFunction:
    async def end_call(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        # The goodbye plays out (or the caller cuts in); either way the agent decided to end.
        await context.control.wait_until_heard()
        context.control.expect("completed", "agent_ended")
        try:
            await telephony.hang_up(context.call_sid)
        except TelephonyError as exc:
            # Closing the media stream still ends the call: the TwiML ends with <Hangup/>.
            log.warning("bank.hang_up_failed", error=str(exc))
        log.info("bank.call_ended_by_agent", reason=str(arguments["reason"])[:200])
        context.control.end("completed", "agent_ended")
        return ToolResult({"ended": True})

    return end_call


def _review_transaction(reviews: TransactionReviews | None) -> ToolFunction:
    async def review_transaction(
        context: ToolContext, arguments: Mapping[str, object]
    ) -> ToolResult:
        customer_id = _verified_customer(context)
        if reviews is None:
            raise ToolError(
                "Reviewing a payment is not available. Offer a transfer to a colleague."
            )
        transaction_id = arguments["transaction_id"]
        recognised = arguments["recognised"]
        if isinstance(transaction_id, bool) or not isinstance(transaction_id, int):
            raise ToolError("transaction_id must be the payment's id, a whole number.")
        if not isinstance(recognised, bool):
            raise ToolError("recognised must be true or false.")
        review = await reviews.review(
            customer_id, transaction_id, recognised=recognised, call_sid=context.call_sid
        )
        if review is None:
            raise ToolError(f"The caller has no payment with id {transaction_id}.")
        log.info(
            "bank.transaction_reviewed",
            transaction_id=transaction_id,
            recognised=review.recognised,
            cards_frozen=list(review.cards_frozen),
            freeze_scope=review.scope,
            new=review.new,
        )
        return ToolResult(
            {
                "transaction_id": transaction_id,
                "recognised": review.recognised,
                "dispute_recorded": not review.recognised,
                "cards_frozen": list(review.cards_frozen),
                # "card": the card that paid; "account": the payment named no card, so every
                # active card of the paying account (the agent may need to say so).
                "freeze_scope": review.scope,
                "already_recorded": not review.new,
            }
        )

    return review_transaction
