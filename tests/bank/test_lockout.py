"""Issue 19: PIN guessing is limited per customer across calls and instances, not per call.

The banking tools on the demo bank in a real database (SQLite and PostgreSQL). Each "call" is a
new tool context with its own CallSid, exactly as a new phone call gets one. Two instances are
two stores, each with its own engine and pool, on one PostgreSQL database.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
import trio

from archer.audio.transcoder import Passthrough
from archer.bank.pin_tools import LOCKED, LOCKED_OUT
from archer.bank.ports import PinPolicy
from archer.bank.tools import bank_tools
from archer.bank.verification import PinVerifier
from archer.call.control import CallControl
from archer.call.items import CallerDtmf, DownlinkItem, UplinkItem
from archer.call.playback import Playback
from archer.call.pumps import UPLINK_BUFFER, forward_to_agent
from archer.call.state import CallState
from archer.call.tools import CallerVerification, ToolContext
from archer.db.bank import SqlBankStore
from archer.db.engine import init_schema
from archer.db.seed import seed_demo_bank
from archer.db.store import SqlCallStore
from archer.db.tables import customers, pin_failures, pin_lockouts
from archer.errors import ConfigError, ToolError
from archer.settings import Settings
from tests.bank.test_tools import SEED, Bank
from tests.fakes.agent import FakeAgent
from tests.fakes.telephony import FakeTelephony

DEMO = json.loads(Path(SEED).read_text())
MAYA = DEMO["customers"][0]
POLICY = PinPolicy(max_failures=5, lockout_seconds=900)


async def open_bank(url: str, policy: PinPolicy = POLICY) -> Bank:
    store = SqlCallStore.open(url, pool_size=2)

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
        pin_policy=policy,
        pin_entry="both",  # verify_caller here; collect_pin shares the count (test_keypad.py)
    )
    return Bank(store, tools, ids)


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    opened = await open_bank(database_url)
    try:
        yield opened
    finally:
        await opened.store.aclose()


def new_call(bank: Bank, n: int) -> ToolContext:
    """Call number ``n`` from Maya's phone: a fresh context with a CallSid of its own."""
    context = attrs.evolve(
        bank.caller(MAYA["phone_e164"]),
        call_sid=f"CA{n:032x}",
        verification=CallerVerification(),
    )
    bank.context = context
    return context


def audit(bank: Bank) -> tuple[list[str], list[tuple[str, int, timedelta]]]:
    """The failure rows' CallSids and the lock-outs (CallSid, failures, length), in order."""
    with bank.store.engine.connect() as conn:
        failures = conn.execute(sa.select(pin_failures.c.call_sid).order_by(pin_failures.c.id))
        calls = [row.call_sid for row in failures]
        locks = conn.execute(sa.select(pin_lockouts).order_by(pin_lockouts.c.id)).all()
    return calls, [(row.call_sid, row.failures, row.locked_until - row.locked_at) for row in locks]


async def test_wrong_pins_lock_the_customer_across_three_calls(bank: Bank) -> None:
    """Three misses lock call 1; two more in call 2 lock the customer; call 3 is refused even
    with the right PIN, and every failure and the lock are on record."""
    new_call(bank, 1)
    for pin in ("0000", "1111"):
        assert (await bank.run("verify_caller", {"pin": pin}))["verified"] is False
    with pytest.raises(ToolError) as third:
        await bank.run("verify_caller", {"pin": "2222"})
    assert str(third.value) == LOCKED  # the per-call lock, as before

    new_call(bank, 2)  # a new call used to start the count again
    assert await bank.run("verify_caller", {"pin": "3333"}) == {
        "verified": False,
        "attempts_left": 1,  # five across calls, four spent
    }
    with pytest.raises(ToolError) as fifth:
        await bank.run("verify_caller", {"pin": "4444"})
    assert str(fifth.value) == LOCKED_OUT

    new_call(bank, 3)
    with pytest.raises(ToolError) as right_pin:
        await bank.run("verify_caller", {"pin": MAYA["pin"]})
    assert str(right_pin.value) == LOCKED_OUT
    assert bank.context is not None
    assert not bank.context.verification.verified
    with pytest.raises(ToolError, match="not verified"):
        await bank.run("get_account_balance", {})

    failures, locks = audit(bank)
    assert failures == [f"CA{1:032x}"] * 3 + [f"CA{2:032x}"] * 2
    assert locks == [(f"CA{2:032x}", 5, timedelta(seconds=900))]


async def test_the_lock_ends_after_its_time_by_the_database_clock(database_url: str) -> None:
    """With a 2 s policy the lock lifts after 2 s (the database's clock), then the PIN works."""
    bank = await open_bank(database_url, PinPolicy(max_failures=2, lockout_seconds=2))
    try:
        new_call(bank, 1)
        assert (await bank.run("verify_caller", {"pin": "0000"}))["attempts_left"] == 1
        with pytest.raises(ToolError, match="locked for this customer"):
            await bank.run("verify_caller", {"pin": "1111"})
        new_call(bank, 2)
        with pytest.raises(ToolError, match="locked for this customer"):
            await bank.run("verify_caller", {"pin": MAYA["pin"]})
        await trio.sleep(3.1)  # SQLite's CURRENT_TIMESTAMP has whole seconds
        new_call(bank, 3)
        assert await bank.run("verify_caller", {"pin": MAYA["pin"]}) == {"verified": True}
        failures, locks = audit(bank)
        assert len(failures) == 2  # the refused guess while locked was not counted
        assert len(locks) == 1
    finally:
        await bank.store.aclose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_instances_share_one_count(database_url: str) -> None:
    """Ten wrong PINs at once, five through each of two instances: exactly five failures are
    counted, one lock is written, and both instances then refuse the right PIN."""
    first = await open_bank(database_url)
    second = SqlCallStore.open(database_url, pool_size=2)
    try:
        customer_id = first.customer_ids[MAYA["phone_e164"]]
        verifiers = [
            PinVerifier(SqlBankStore.from_call_store(first.store), POLICY),
            PinVerifier(SqlBankStore.from_call_store(second), POLICY),
        ]
        outcomes = []

        async def guess(verifier: PinVerifier, n: int) -> None:
            outcomes.append(await verifier.check(customer_id, f"CA{n:032x}", f"{n:04d}"))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(guess, verifiers[n % 2], n)
        assert not any(outcome.verified for outcome in outcomes)
        # The fifth failure locks; the five guesses after it are refused uncounted.
        assert sum(outcome.locked_out for outcome in outcomes) == 6
        failures, locks = audit(first)
        assert len(failures) == 5
        assert [(count, length) for _, count, length in locks] == [(5, timedelta(seconds=900))]
        for verifier in verifiers:
            right = await verifier.check(customer_id, "CA" + "f" * 32, MAYA["pin"])
            assert (right.verified, right.locked_out) == (False, True)
    finally:
        await second.aclose()
        await first.store.aclose()


def test_the_lockout_settings_are_read_and_checked() -> None:
    """``PIN_MAX_FAILURES`` and ``PIN_LOCKOUT_SECONDS``: defaults 5 and 900, read, validated."""
    defaults = Settings.from_environ({})
    assert (defaults.pin_max_failures, defaults.pin_lockout_seconds) == (5, 900.0)
    assert PinPolicy() == PinPolicy(defaults.pin_max_failures, defaults.pin_lockout_seconds)
    custom = Settings.from_environ({"PIN_MAX_FAILURES": "3", "PIN_LOCKOUT_SECONDS": "60"})
    assert (custom.pin_max_failures, custom.pin_lockout_seconds) == (3, 60.0)
    with pytest.raises(ConfigError, match="PIN_MAX_FAILURES"):
        Settings.from_environ({"PIN_MAX_FAILURES": "0"})
    with pytest.raises(ConfigError, match="PIN_LOCKOUT_SECONDS"):
        Settings.from_environ({"PIN_LOCKOUT_SECONDS": "soon"})


async def keyed(bank: Bank, keys: str) -> dict[str, object] | str:
    """``collect_pin`` as a call runs it: the real forwarder owns the capture and the caller
    keys ``keys`` on the uplink; a refusal comes back as its text."""
    assert bank.context is not None
    agent = FakeAgent()
    call_state = new_call_state(bank.context.call_sid)
    uplink_send, uplink_receive = trio.open_memory_channel[UplinkItem](UPLINK_BUFFER)
    downlink, _ = trio.open_memory_channel[DownlinkItem](1)
    context = attrs.evolve(
        bank.context,
        control=CallControl(
            call_state, Playback(), downlink, trio.CancelScope(), uplink=uplink_send.clone()
        ),
    )
    tool = bank.tools.get("collect_pin")
    assert tool is not None

    async def caller_keys() -> None:
        await trio.sleep(0.05)
        for key in keys:
            await uplink_send.send(CallerDtmf(key))

    outcome: dict[str, object] | str
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward_to_agent, agent, uplink_receive, Passthrough(), call_state)
        nursery.start_soon(caller_keys)
        try:
            result = await tool.run(context, {})
        except ToolError as refusal:
            outcome = str(refusal)
        else:
            assert isinstance(result.content, dict)
            outcome = result.content
        nursery.cancel_scope.cancel()
    assert agent.sent("dtmf") == []  # whatever happened, no key reached the agent
    return outcome


def new_call_state(call_sid: str) -> CallState:
    now = datetime.now(UTC)
    return CallState(
        call_sid=call_sid,
        stream_sid="MZ" + "7" * 32,
        started_at=now,
        connected_at=now,
        connected_clock=0.0,
    )


async def test_keypad_and_spoken_pins_share_one_lock_out(bank: Bank) -> None:
    """Issue 21, acceptance 3: wrong PINs by ``collect_pin`` and ``verify_caller`` across two
    calls lock the customer; then both are refused, even with the right PIN."""
    new_call(bank, 1)
    assert await keyed(bank, "0000#") == {"verified": False, "attempts_left": 2}
    assert (await bank.run("verify_caller", {"pin": "1111"}))["attempts_left"] == 1
    assert await keyed(bank, "2222#") == LOCKED  # the call's third failure

    new_call(bank, 2)
    assert await keyed(bank, "3333#") == {"verified": False, "attempts_left": 1}
    assert await keyed(bank, "4444#") == LOCKED_OUT  # the customer's fifth

    new_call(bank, 3)
    assert await keyed(bank, str(MAYA["pin"]) + "#") == LOCKED_OUT
    with pytest.raises(ToolError) as spoken:
        await bank.run("verify_caller", {"pin": MAYA["pin"]})
    assert str(spoken.value) == LOCKED_OUT
    assert bank.context is not None
    assert not bank.context.verification.verified

    failures, locks = audit(bank)
    assert failures == [f"CA{1:032x}"] * 3 + [f"CA{2:032x}"] * 2
    assert locks == [(f"CA{2:032x}", 5, timedelta(seconds=900))]
