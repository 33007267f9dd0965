"""The banking tools against the real database (SQLite and PostgreSQL), on the demo bank.

Tools run here exactly as ``ToolRunner`` runs them: arguments checked against the tool's
schema, refusals as ``ToolError``. Transfers and hang-ups are in ``test_call_control.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
import trio

from archer.bank.pin_tools import LOCKED
from archer.bank.tools import NO_CUSTOMER, NOT_VERIFIED, bank_tools
from archer.call.control import CallControl
from archer.call.items import DownlinkItem
from archer.call.playback import Playback
from archer.call.state import CallState
from archer.call.tools import CallerVerification, ToolContext, ToolRegistry
from archer.db.bank import SqlBankStore
from archer.db.engine import init_schema
from archer.db.seed import seed_demo_bank
from archer.db.store import SqlCallStore
from archer.db.tables import cards, customers
from archer.errors import ToolError
from tests.fakes.telephony import FakeTelephony

SEED = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
DEMO = json.loads(SEED.read_text())
MAYA, JAMES = DEMO["customers"][0], DEMO["customers"][1]


@attrs.define
class Bank:
    """The demo bank in a real database, and a caller on the line."""

    store: SqlCallStore
    tools: ToolRegistry
    customer_ids: dict[str, int]
    context: ToolContext | None = None

    def caller(self, phone: str | None) -> ToolContext:
        """A new call from ``phone`` (None: withheld number, no customer)."""
        now = datetime.now(UTC)
        call = CallState(
            call_sid="CA" + "7" * 32,
            stream_sid="MZ" + "7" * 32,
            started_at=now,
            connected_at=now,
            connected_clock=0.0,
        )
        downlink, _ = trio.open_memory_channel[DownlinkItem](1)
        self.context = ToolContext(
            call_sid=call.call_sid,
            customer_id=None if phone is None else self.customer_ids[phone],
            verification=CallerVerification(),
            control=CallControl(call, Playback(), downlink, trio.CancelScope()),
        )
        return self.context

    async def run(self, name: str, arguments: Mapping[str, object]) -> dict[str, object]:
        """Run a tool as the runner would; a refusal or bad arguments raise ``ToolError``."""
        assert self.context is not None
        tool = self.tools.get(name)
        assert tool is not None
        problem = tool.argument_problem(arguments)
        if problem is not None:
            raise ToolError(f"invalid arguments: {problem}")
        result = await tool.run(self.context, arguments)
        assert not result.is_error
        assert isinstance(result.content, dict)
        assert len(result.text().encode()) <= 4096
        return result.content

    def card_status(self, last4: str) -> str:
        with self.store.engine.connect() as conn:
            return str(
                conn.execute(sa.select(cards.c.status).where(cards.c.last4 == last4)).scalar_one()
            )

    def set_card_status(self, last4: str, status: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(cards).where(cards.c.last4 == last4).values(status=status))


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    store = SqlCallStore.open(database_url, pool_size=2)

    def prepare() -> dict[str, int]:
        init_schema(store.engine)
        seed_demo_bank(store.engine, SEED)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(customers.c.phone_e164, customers.c.id)).all()
        return {phone: customer_id for phone, customer_id in rows}

    ids = await trio.to_thread.run_sync(prepare)
    tools = bank_tools(
        SqlBankStore.from_call_store(store),
        FakeTelephony(),
        human_agent_number="+15555550199",
        pin_entry="both",  # these tests drive verify_caller; PIN_ENTRY=keypad refuses it
    )
    try:
        yield Bank(store, tools, ids)
    finally:
        await store.aclose()


async def verified(bank: Bank, customer: dict[str, object]) -> None:
    bank.caller(str(customer["phone_e164"]))
    assert await bank.run("verify_caller", {"pin": customer["pin"]}) == {"verified": True}


# --- verify_caller -------------------------------------------------------------------------


async def test_the_right_pin_verifies_the_caller(bank: Bank) -> None:
    """The customer's PIN verifies them for this call only."""
    await verified(bank, MAYA)
    assert bank.context is not None
    assert bank.context.verification.verified
    bank.caller(MAYA["phone_e164"])  # a new call starts unverified
    with pytest.raises(ToolError, match="not verified"):
        await bank.run("get_account_balance", {})


async def test_three_wrong_pins_lock_verification_for_the_call(bank: Bank) -> None:
    """Two misses say how many attempts are left; the third locks, even against the right PIN."""
    bank.caller(MAYA["phone_e164"])
    assert await bank.run("verify_caller", {"pin": "0000"}) == {
        "verified": False,
        "attempts_left": 2,
    }
    assert await bank.run("verify_caller", {"pin": "1111"}) == {
        "verified": False,
        "attempts_left": 1,
    }
    with pytest.raises(ToolError) as third:
        await bank.run("verify_caller", {"pin": "2222"})
    assert str(third.value) == LOCKED
    with pytest.raises(ToolError, match="locked"):
        await bank.run("verify_caller", {"pin": MAYA["pin"]})


async def test_another_customers_pin_does_not_verify(bank: Bank) -> None:
    """James's PIN on Maya's line is simply a wrong PIN."""
    bank.caller(MAYA["phone_e164"])
    assert (await bank.run("verify_caller", {"pin": JAMES["pin"]}))["verified"] is False


async def test_a_caller_without_customer_record_is_just_not_verified(bank: Bank) -> None:
    """A withheld number gets the same answer as a wrong PIN: nothing about who exists."""
    bank.caller(None)
    assert await bank.run("verify_caller", {"pin": "1234"}) == {
        "verified": False,
        "attempts_left": 2,
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "invalid arguments"),
        ({"pin": 1234}, "invalid arguments"),
        ({"pin": "12a4"}, "4 to 8 digits"),
    ],
)
async def test_bad_pin_arguments_are_refused_without_a_strike(
    bank: Bank, arguments: dict[str, object], message: str
) -> None:
    """A malformed PIN is an error result and does not count as a failed attempt."""
    bank.caller(MAYA["phone_e164"])
    with pytest.raises(ToolError, match=message):
        await bank.run("verify_caller", arguments)
    assert bank.context is not None
    assert bank.context.verification.failures == 0


# --- account data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("get_account_balance", {}),
        ("list_recent_transactions", {}),
        ("freeze_card", {"last4": "2207"}),
        ("unfreeze_card", {"last4": "2207"}),
    ],
)
async def test_account_tools_need_verification(
    bank: Bank, tool: str, arguments: dict[str, object]
) -> None:
    """Unverified callers get an error telling the agent to verify first; nothing changes."""
    bank.caller(MAYA["phone_e164"])
    with pytest.raises(ToolError) as refused:
        await bank.run(tool, arguments)
    assert str(refused.value) == NOT_VERIFIED
    assert bank.card_status("2207") == "active"


@pytest.mark.parametrize("tool", ["get_account_balance", "list_recent_transactions", "freeze_card"])
async def test_callers_without_a_customer_record_cannot_use_account_tools(
    bank: Bank, tool: str
) -> None:
    """A caller with no customer record may only be transferred or have the call ended."""
    bank.caller(None)
    with pytest.raises(ToolError) as refused:
        await bank.run(tool, {"last4": "2207"} if tool == "freeze_card" else {})
    assert str(refused.value) == NO_CUSTOMER


async def test_balances_match_the_database(bank: Bank) -> None:
    """Every account of the caller, with balance and currency, and only theirs."""
    await verified(bank, MAYA)
    result = await bank.run("get_account_balance", {})
    assert result["accounts"] == [
        {
            "account_type": account["kind"],
            "last4": account["last4"],
            "balance_cents": account["balance_cents"],
            "currency": account["currency"],
        }
        for account in sorted(MAYA["accounts"], key=lambda a: (a["kind"], a["last4"]))
    ]
    savings = await bank.run("get_account_balance", {"account_type": "savings"})
    assert [a["last4"] for a in savings["accounts"]] == ["7310"]


async def test_a_missing_account_type_is_an_error(bank: Bank) -> None:
    """James has no savings account: the agent is told so."""
    await verified(bank, JAMES)
    with pytest.raises(ToolError, match="no savings account"):
        await bank.run("get_account_balance", {"account_type": "savings"})
    with pytest.raises(ToolError, match="invalid arguments"):
        await bank.run("get_account_balance", {"account_type": "brokerage"})


async def test_recent_transactions_newest_first_and_at_most_ten(bank: Bank) -> None:
    """Transactions come newest first; a limit above ten is cut to ten."""
    await verified(bank, MAYA)
    result = await bank.run("list_recent_transactions", {"limit": 50})
    dates = [item["posted_at"] for item in result["transactions"]]
    assert len(dates) == 10
    assert dates == sorted(dates, reverse=True)
    checking = await bank.run("list_recent_transactions", {"account_type": "checking", "limit": 3})
    assert len(checking["transactions"]) == 3
    assert {item["account_last4"] for item in checking["transactions"]} == {"4821"}
    assert (await bank.run("list_recent_transactions", {}))["transactions"][:1] == result[
        "transactions"
    ][:1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": "5"}, "invalid arguments"),
        ({"limit": 0}, "at least 1"),
        ({"account_type": "x"}, "invalid"),
    ],
)
async def test_bad_transaction_arguments(
    bank: Bank, arguments: dict[str, object], message: str
) -> None:
    """Wrong types and out-of-range limits are error results."""
    await verified(bank, MAYA)
    with pytest.raises(ToolError, match=message):
        await bank.run("list_recent_transactions", arguments)


# --- cards -------------------------------------------------------------------------------------


async def test_freeze_and_unfreeze_are_idempotent_and_change_the_row(bank: Bank) -> None:
    """Freezing sets the card's status; repeating it changes nothing; unfreezing restores it."""
    await verified(bank, MAYA)
    assert await bank.run("freeze_card", {"last4": "2207"}) == {
        "last4": "2207",
        "status": "frozen",
        "changed": True,
    }
    assert bank.card_status("2207") == "frozen"
    assert (await bank.run("freeze_card", {"last4": "2207"}))["changed"] is False
    assert (await bank.run("unfreeze_card", {"last4": "2207"}))["status"] == "active"
    assert bank.card_status("2207") == "active"


@pytest.mark.parametrize(
    ("last4", "message"),
    [("0000", "no card ending in 0000"), ("6612", "no card ending in 6612"), ("22", "four digits")],
)
async def test_unknown_or_someone_elses_card_is_an_error(
    bank: Bank, last4: str, message: str
) -> None:
    """A card that is not the caller's (James's 6612 on Maya's call) is never touched."""
    await verified(bank, MAYA)
    with pytest.raises(ToolError, match=message):
        await bank.run("freeze_card", {"last4": last4})
    assert bank.card_status("6612") == "active"


async def test_a_lost_card_stays_blocked(bank: Bank) -> None:
    """A card reported lost can be neither frozen nor unfrozen here."""
    await trio.to_thread.run_sync(bank.set_card_status, "9904", "lost")
    await verified(bank, MAYA)
    for tool in ("unfreeze_card", "freeze_card"):
        with pytest.raises(ToolError, match="reported lost"):
            await bank.run(tool, {"last4": "9904"})
    assert bank.card_status("9904") == "lost"
