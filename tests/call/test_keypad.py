"""Keypad capture (issue 21): ``collect_pin`` over ``run_call`` with fakes for Twilio, the agent
and the bank's PIN store.

Real clock, not the autojump one: the PIN check runs PBKDF2 in a worker thread. The entry
rules are shortened so each test takes well under a second or two.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import attrs
import pytest
import trio
import trio.testing

from archer.bank.pin_tools import (
    CAPTURE_BUSY_TEXT,
    ENTRY_INTERRUPTED,
    ENTRY_TIMED_OUT,
    KEYPAD_OFF,
    KEYPAD_ONLY,
    RECORDING_NOT_PAUSED,
)
from archer.bank.pins import hash_pin
from archer.bank.ports import PinLock, PinPolicy
from archer.bank.tools import bank_tools
from archer.call.keypad import EntryRules
from archer.call.tools import ToolRegistry
from archer.errors import TelephonyError
from tests.call.test_session import LIMITS, Bridge
from tests.fakes.telephony import FakeTelephony
from tests.helpers import audio

PIN = "4821"
#: A cheap hash (few iterations): the tests are about the capture, not PBKDF2's cost.
PIN_HASH = hash_pin(PIN, iterations=1000, salt=b"test-salt")
#: Keys outside a capture are dropped (DTMF_TO_AGENT's default): each Bridge here says so.
RULES = EntryRules(max_digits=8, digit_timeout=0.5, entry_timeout=2.0)
KEYPAD_LIMITS = LIMITS


@attrs.define
class FakePinBank:
    """The PIN part of ``BankStore``: one customer, failures counted like the database does."""

    failures: int = 0
    checks: int = 0

    async def pin_hash(self, customer_id: int) -> str | None:
        await trio.lowlevel.checkpoint()
        self.checks += 1
        return PIN_HASH

    async def pin_lock(self, customer_id: int) -> PinLock:
        await trio.lowlevel.checkpoint()
        return PinLock(locked=self.failures >= 5, failures=self.failures)

    async def record_pin_failure(
        self, customer_id: int, call_sid: str, policy: PinPolicy
    ) -> PinLock:
        await trio.lowlevel.checkpoint()
        self.failures += 1
        locked = self.failures >= policy.max_failures
        return PinLock(locked=locked, failures=self.failures, newly_locked=locked)


def keypad_tools(bank: FakePinBank, pin_entry: str = "keypad") -> ToolRegistry:
    return bank_tools(
        bank,  # type: ignore[arg-type]
        FakeTelephony(),
        human_agent_number="+15555550199",
        pin_entry=pin_entry,
        entry_rules=RULES,
    )


def voice(tag: int) -> str:
    """Caller audio that is not silence (μ-law 0xFF/0x7F are silence)."""
    return audio(0x20 + tag)


def is_silence(payload: object) -> bool:
    assert isinstance(payload, str)
    return set(base64.b64decode(payload)) <= {0xFF}


async def settle() -> None:
    await trio.sleep(0.02)
    await trio.testing.wait_all_tasks_blocked()


async def press(bridge: Bridge, keys: str) -> None:
    for key in keys:
        bridge.twilio.press(key)
        bridge.twilio.speak(voice(len(key)))  # the caller keeps making noise while keying
        await settle()


async def wait_for_result(bridge: Bridge, tool_call_id: str) -> tuple[str, bool]:
    with trio.fail_after(RULES.entry_timeout + 5):
        while True:
            for value in bridge.agent.sent("tool_result"):
                assert isinstance(value, tuple)
                if value[0] == tool_call_id:
                    return value[1], value[2]
            await trio.sleep(0.01)


def after(bridge: Bridge, start: int, kind: str) -> list[object]:
    return [value for sent, value in bridge.agent.received[start:] if sent == kind]


async def test_pin_keyed_during_the_lead_in_is_checked_and_never_reaches_the_agent() -> None:
    """Acceptance 1 (unit tier): keys during the lead-in count; from the tool call to its result
    the agent gets no key and no caller sound; then forwarding is restored."""
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.twilio.press("9")  # before the tool call: dropped (DTMF_TO_AGENT off), counted
        bridge.twilio.speak(voice(1))
        await settle()
        assert bridge.agent.speech() == [voice(1)]
        start = len(bridge.agent.received)
        bridge.agent.call_tool("call_pin", "collect_pin")
        for tag in range(5):  # the lead-in: "please key your PIN, then hash"
            bridge.agent.say(audio(100 + tag))
        await settle()
        await press(bridge, PIN[:2])  # while the lead-in plays
        for tag in range(3):
            bridge.twilio.speak(voice(tag))  # a PIN said aloud
        await settle()
        await press(bridge, PIN[2:] + "#")
        result, is_error = await wait_for_result(bridge, "call_pin")
        during = bridge.agent.received[start:]
        bridge.twilio.speak(voice(9))
        bridge.twilio.press("5")
        await settle()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (json.loads(result), is_error) == ({"verified": True}, False)
    result_at = during.index(("tool_result", ("call_pin", result, False)))
    assert [kind for kind, _ in during[:result_at] if kind == "dtmf"] == []
    silenced = [value for kind, value in during[:result_at] if kind == "audio"]
    assert silenced
    assert all(is_silence(payload) for payload in silenced)
    assert bridge.agent.sent("dtmf") == []  # DTMF_TO_AGENT off: not before, not after either
    assert bridge.agent.speech()[-1] == voice(9)  # forwarding restored
    assert bridge.call.frames_silenced_for_pin == 8  # every caller frame of the capture
    assert bridge.call.dtmf_dropped == 2  # the "9" before and the "5" after
    assert bank.checks == 1
    [record] = bridge.call.snapshot().tool_calls
    assert (record.name, record.result, record.is_error) == ("collect_pin", result, False)
    assert PIN not in repr(bridge.call.snapshot())


async def test_a_wrong_pin_says_attempts_left_and_never_how_many_were_keyed() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        await press(bridge, "000000#")
        result, is_error = await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (json.loads(result), is_error) == ({"verified": False, "attempts_left": 2}, False)
    assert bank.failures == 1


async def test_star_starts_the_entry_over() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        await press(bridge, "77*" + PIN + "#")
        result, _ = await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert json.loads(result) == {"verified": True}
    assert bank.failures == 0


async def test_the_entry_times_out_without_a_check() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        result, is_error = await wait_for_result(bridge, "call_pin")
        bridge.twilio.speak(voice(3))
        await settle()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (result, is_error) == (ENTRY_TIMED_OUT, True)
    assert (bank.checks, bank.failures) == (0, 0)
    assert bridge.agent.speech() == [voice(3)]  # forwarding restored after the timeout


async def test_the_digit_timeout_submits_what_was_keyed() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        await press(bridge, PIN)  # no hash: the digit timeout ends the entry
        result, _ = await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert json.loads(result) == {"verified": True}


async def test_a_caller_hanging_up_during_the_entry_ends_the_call_and_checks_nothing() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        await press(bridge, PIN[:3])
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "caller_hangup")
    assert (bank.checks, bank.failures) == (0, 0)
    assert bridge.agent.sent("dtmf") == []
    [record] = bridge.call.snapshot().tool_calls
    assert (record.name, record.finished_at) == ("collect_pin", None)  # started, never answered


async def test_a_barge_in_ends_the_entry_unchecked() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.say(audio(100))
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        await press(bridge, PIN[:2])
        bridge.agent.clear()  # the agent was cut off: its prompt was not heard
        result, is_error = await wait_for_result(bridge, "call_pin")
        bridge.twilio.speak(voice(4))
        await settle()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (result, is_error) == (ENTRY_INTERRUPTED, True)
    assert (bank.checks, bank.failures) == (0, 0)
    assert bridge.agent.speech()[-1] == voice(4)
    assert bridge.agent.sent("dtmf") == []


async def test_a_second_collect_pin_while_one_runs_is_refused() -> None:
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        bridge.agent.call_tool("call_pin_2", "collect_pin")
        second, second_error = await wait_for_result(bridge, "call_pin_2")
        await press(bridge, PIN + "#")
        first, _ = await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (second, second_error) == (CAPTURE_BUSY_TEXT, True)
    assert json.loads(first) == {"verified": True}  # the first capture was not disturbed
    assert bank.checks == 1


@pytest.mark.parametrize(
    ("pin_entry", "tool", "arguments", "refusal"),
    [
        ("keypad", "verify_caller", {"pin": PIN}, KEYPAD_ONLY),
        ("agent", "collect_pin", {}, KEYPAD_OFF),
    ],
)
async def test_pin_entry_refuses_the_other_way(
    pin_entry: str, tool: str, arguments: Mapping[str, object], refusal: str
) -> None:
    """``PIN_ENTRY=keypad``: an agent cannot be talked into taking a spoken PIN."""
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank, pin_entry), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_x", tool, arguments)
        result, is_error = await wait_for_result(bridge, "call_x")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (result, is_error) == (refusal, True)
    assert bank.checks == 0


def recorded_tools(bank: FakePinBank, telephony: FakeTelephony) -> ToolRegistry:
    return bank_tools(
        bank,  # type: ignore[arg-type]
        telephony,
        human_agent_number="+15555550199",
        entry_rules=RULES,
        recording_pause="skip",
    )


async def test_the_recording_is_paused_before_any_key_is_read_and_resumed_after() -> None:
    """Acceptance 4 (unit tier): pause, then the entry and its check, then resume."""
    bank, telephony = FakePinBank(), FakeTelephony()
    bridge = Bridge(tools=recorded_tools(bank, telephony), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        assert telephony.requests == [("pause", bridge.call.call_sid, "skip")]
        assert bank.checks == 0
        await press(bridge, PIN + "#")
        result, is_error = await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (json.loads(result), is_error) == ({"verified": True}, False)
    assert telephony.requests == [
        ("pause", bridge.call.call_sid, "skip"),
        ("resume", bridge.call.call_sid, "skip"),
    ]


async def test_a_failing_pause_refuses_without_collecting() -> None:
    """No pause, no entry: the agent hears why, nothing is checked, the keys stay withheld."""
    bank = FakePinBank()
    telephony = FakeTelephony(failure=TelephonyError("recording not found", code=20404))
    bridge = Bridge(tools=recorded_tools(bank, telephony), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await press(bridge, PIN + "#")
        result, is_error = await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (result, is_error) == (RECORDING_NOT_PAUSED, True)
    assert (bank.checks, bank.failures) == (0, 0)
    assert bridge.agent.sent("dtmf") == []
