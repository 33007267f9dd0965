"""Keypad capture (issue 21): ``collect_pin`` over ``run_call`` with fakes for Twilio, the agent
and the bank's PIN store.

Real clock, not the autojump one: the PIN check runs PBKDF2 in a worker thread. The entry
rules are shortened so each test takes well under a second or two.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from archer.bank.pin_tools import (
    CAPTURE_BUSY_TEXT,
    ENTRY_ENDED,
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
from archer.call.reconnect import ReconnectPolicy
from archer.call.recorder import RECORD_BATCH_SECONDS
from archer.call.records import RecordingEventRecord, ToolCallRecord
from archer.call.session import bridge_call, flush_call_record
from archer.call.state import utc_now
from archer.call.tools import ToolRegistry
from archer.db.store import SqlCallStore
from archer.errors import AgentClosedError, TelephonyError
from tests.call.test_reconnect import FakeAgentSequence
from tests.call.test_session import LIMITS, Bridge, new_call
from tests.fakes.agent import FakeAgent, FakeAgentConnector
from tests.fakes.store import FakeSpool
from tests.fakes.telephony import FakeTelephony
from tests.fakes.twilio import FakeTwilio
from tests.helpers import audio

PIN = "4821"
RECORDING_SID = "RE" + "ab" * 16
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


async def wait_until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while True:
            if condition():
                return
            await trio.sleep(0.01)


def outcomes(bridge: Bridge) -> list[str | None]:
    """The ``outcome`` of each tool call of the call, in the order they started."""
    return [tool.outcome for tool in bridge.call.snapshot().tool_calls]


def assert_paused_around(events: Sequence[RecordingEventRecord], capture: ToolCallRecord) -> None:
    """A pause and a resume Twilio accepted, in that order, both within the capture's row."""
    assert [(e.seq, e.action, e.accepted, e.error_code) for e in events] == [
        (1, "pause", True, None),
        (2, "resume", True, None),
    ]
    pause, resume = events
    assert capture.finished_at is not None
    assert capture.started_at <= pause.requested_at <= pause.answered_at
    assert pause.answered_at <= resume.requested_at <= resume.answered_at <= capture.finished_at
    assert {pause.recording_sid, resume.recording_sid} == {RECORDING_SID}


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
    assert record.outcome == "verified"
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
    assert outcomes(bridge) == ["wrong_pin"]


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
    assert outcomes(bridge) == ["timed_out"]
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
    assert bridge.agent.sent("tool_result") == []  # nobody is left to answer
    # Never answered, yet finished in the record: its outcome and when the entry ended.
    [record] = bridge.call.snapshot().tool_calls
    assert (record.name, record.outcome, record.is_error) == ("collect_pin", "hang_up", True)
    assert record.finished_at is not None
    assert record.finished_at >= record.started_at
    assert record.result == "collect_pin was cut off by caller_hangup; no result"


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
    assert outcomes(bridge) == ["barge_in"]
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
    assert outcomes(bridge) == ["verified", "refused_busy"]  # in the order they started


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
    if tool == "collect_pin":
        assert outcomes(bridge) == ["refused_setting"]


def recorded_tools(
    bank: FakePinBank, telephony: FakeTelephony, rules: EntryRules = RULES
) -> ToolRegistry:
    return bank_tools(
        bank,  # type: ignore[arg-type]
        telephony,
        human_agent_number="+15555550199",
        entry_rules=rules,
        recording_pause="skip",
    )


async def test_the_recording_is_paused_before_any_key_is_read_and_resumed_after() -> None:
    """Acceptance 4 (unit tier): pause, then the entry and its check, then resume; both are in
    the record, in order, with their times around the capture."""
    bank, telephony = FakePinBank(), FakeTelephony(recording_sid=RECORDING_SID)
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
    record = bridge.call.snapshot()
    [capture] = record.tool_calls
    assert_paused_around(record.recording_events, capture)
    assert capture.outcome == "verified"


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
    # The failed pause is in the record, with Twilio's code; nothing to resume after it.
    record = bridge.call.snapshot()
    [pause] = record.recording_events
    assert (pause.seq, pause.action, pause.accepted, pause.error_code) == (1, "pause", False, 20404)
    assert pause.recording_sid is None
    [capture] = record.tool_calls
    assert capture.started_at <= pause.requested_at <= pause.answered_at <= capture.finished_at
    assert capture.outcome == "refused_recording"


async def test_the_agent_failing_mid_entry_fails_the_call_and_finishes_the_row() -> None:
    """Without reconnects an agent failure ends the call; the entry is cut off unchecked and its
    row finished, with no digit anywhere. Its outcome is ``agent_failed`` when the dead
    session's forwarder ending reaches the entry first (its keys stop), ``call_failed`` when the
    call's cancellation does (the end reason is named only after every task has stopped):
    trio's scheduling decides which, and both say what happened."""
    bank = FakePinBank()
    bridge = Bridge(tools=keypad_tools(bank), dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await settle()
        await press(bridge, PIN[:3])
        bridge.agent.emit(AgentClosedError(1011, "internal error"))
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("failed", "agent_error")
    assert (bank.checks, bank.failures) == (0, 0)
    [record] = bridge.call.snapshot().tool_calls
    assert record.outcome in ("agent_failed", "call_failed")
    assert record.is_error
    assert record.finished_at is not None
    assert PIN[:3] not in repr(bridge.call.snapshot())


async def test_the_agent_session_dying_mid_entry_ends_it_and_the_next_session_hears_nothing() -> (
    None
):
    """With reconnects (issue 16) the call goes on with a new session: the entry of the session
    that died ends at once, unchecked, recorded as ``agent_failed``; no result goes to either
    session, and the keys of the dead entry never reach the new one."""
    bank = FakePinBank()
    first, second = FakeAgent(agent_call_id="ac_first"), FakeAgent(agent_call_id="ac_second")
    twilio = FakeTwilio()
    call = new_call()
    connector = FakeAgentSequence([first, second], reconnect_delay=0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                bridge_call,
                call,
                twilio,
                connector,
                keypad_tools(bank),
                limits=KEYPAD_LIMITS,
                audio_format="mulaw_8000",
                reconnect=ReconnectPolicy(attempts=2, window=10.0, base_delay=0.05),
            )
        )
        first.call_tool("call_pin", "collect_pin")
        await settle()
        for key in PIN[:2]:
            twilio.press(key)
            await settle()
        first.emit(AgentClosedError(1011, "internal error"))
        await wait_until(lambda: call.snapshot().tool_calls[0].finished_at is not None)
        await wait_until(lambda: connector.opened == 2)
        await settle()
        twilio.press("9")  # outside any capture now: dropped (DTMF_TO_AGENT off)
        await settle()
        twilio.stop()
    [record] = call.snapshot().tool_calls
    assert (record.outcome, record.is_error, record.result) == ("agent_failed", True, ENTRY_ENDED)
    assert (bank.checks, bank.failures) == (0, 0)
    assert first.sent("tool_result") == second.sent("tool_result") == []
    assert first.sent("dtmf") == second.sent("dtmf") == []
    assert call.end_reason == "caller_hangup"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_hang_up_mid_entry_is_in_the_stored_record(sql_store: SqlCallStore) -> None:
    """Issue 21, the record after the flush (SQLite and PostgreSQL): the capture's row is
    finished as ``hang_up`` with its end time; the pause and the resume are rows, in order,
    with their times within the capture, written by the recorder while the call ran and again
    (harmlessly) by the final flush."""
    bank, telephony = FakePinBank(), FakeTelephony(recording_sid=RECORDING_SID)
    call = new_call()
    call.customer_id = None  # no customers row here (the PIN bank is a fake)
    twilio, connector = FakeTwilio(), FakeAgentConnector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                bridge_call,
                call,
                twilio,
                connector,
                # Slow rules: the entry is still open when the recorder's batch comes due.
                recorded_tools(bank, telephony, EntryRules(digit_timeout=30, entry_timeout=60)),
                limits=KEYPAD_LIMITS,
                audio_format="mulaw_8000",
                store=sql_store,
            )
        )
        connector.agent.call_tool("call_pin", "collect_pin")
        await settle()
        for key in PIN[:3]:
            twilio.press(key)
            await settle()
        # The recorder writes the pause while the call runs (a crash would keep it).
        with trio.fail_after(RECORD_BATCH_SECONDS + 5):
            while True:
                stored = await sql_store.load_call(call.call_sid)
                if stored is not None and stored.record.recording_events:
                    break
                await trio.sleep(0.1)
        [paused] = stored.record.recording_events
        assert (paused.action, paused.accepted) == ("pause", True)
        twilio.stop()
    call.close(now=utc_now(), clock=trio.current_time())
    assert await flush_call_record(sql_store, FakeSpool(), call.snapshot(), timeout=10)
    stored = await sql_store.load_call(call.call_sid)
    assert stored is not None
    [capture] = stored.record.tool_calls
    assert (capture.name, capture.outcome, capture.is_error) == ("collect_pin", "hang_up", True)
    assert_paused_around(stored.record.recording_events, capture)
    assert (bank.checks, bank.failures) == (0, 0)
    assert capture.result is not None
    assert not any(character.isdigit() for character in capture.result)  # no key, no count


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_failed_pause_is_a_stored_row(sql_store: SqlCallStore) -> None:
    """A refused pause is stored as refused (with Twilio's code), and the capture's row says
    ``refused_recording`` (SQLite and PostgreSQL)."""
    bank = FakePinBank()
    telephony = FakeTelephony(failure=TelephonyError("recording not found", code=20404))
    bridge = Bridge(tools=recorded_tools(bank, telephony), dtmf_to_agent=False)
    bridge.call.customer_id = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, KEYPAD_LIMITS)
        bridge.agent.call_tool("call_pin", "collect_pin")
        await wait_for_result(bridge, "call_pin")
        bridge.twilio.stop()
        await bridge.wait_done()
    await sql_store.save_call(bridge.call.snapshot())
    await sql_store.save_call(bridge.call.snapshot())  # a repeat (a replay) changes nothing
    stored = await sql_store.load_call(bridge.call.call_sid)
    assert stored is not None
    [pause] = stored.record.recording_events
    assert (pause.seq, pause.action, pause.accepted, pause.error_code) == (1, "pause", False, 20404)
    assert [tool.outcome for tool in stored.record.tool_calls] == ["refused_recording"]
