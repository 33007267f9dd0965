"""``transfer_to_human`` and ``end_call`` inside a call: marks, barge-in, Twilio's answers.

The agent's lead-in must be heard (its mark echoed) before Twilio is asked to transfer; a clear
in between cancels the transfer. Runs ``bridge_call`` on memory-channel fakes, autojump clock.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio
import trio.testing

from archer.bank.tools import bank_tools
from archer.call.control import transfer_request
from archer.call.tools import Tool, ToolContext, ToolRegistry, ToolResult
from archer.errors import TelephonyError
from tests.call.test_session import Bridge
from tests.fakes.telephony import FakeTelephony
from tests.helpers import audio

HUMAN = "+15555550199"


class UnusedBank:
    """The call-control tools never touch the bank."""


def tools(telephony: FakeTelephony, number: str = HUMAN) -> ToolRegistry:
    return bank_tools(UnusedBank(), telephony, human_agent_number=number)  # type: ignore[arg-type]


async def lead_in_then(bridge: Bridge, tool: str) -> None:
    """The agent says a sentence, then calls ``tool``; wait until its mark reaches Twilio."""
    for tag in range(5):
        bridge.agent.say(audio(tag))
    bridge.agent.call_tool("call_t", tool, {"reason": "caller asked"})
    await trio.testing.wait_all_tasks_blocked()


async def test_transfer_waits_for_the_lead_in_to_be_heard(autojump_clock: trio.abc.Clock) -> None:
    """No transfer until the mark behind the lead-in is echoed; then <Dial> and ``transferred``."""
    telephony = FakeTelephony()
    bridge = Bridge(tools=tools(telephony))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await lead_in_then(bridge, "transfer_to_human")
        [mark] = bridge.twilio.sent("mark")
        assert bridge.twilio.outbound[-1] == ("mark", mark)  # behind all five chunks
        await trio.sleep(3)
        assert telephony.requests == []  # the lead-in is still playing
        bridge.twilio.echo_mark(mark)
        await bridge.wait_done()
    assert telephony.requests == [("transfer", bridge.call.call_sid, HUMAN)]
    assert (bridge.call.status, bridge.call.end_reason) == ("transferred", "transferred")
    [record] = bridge.call.snapshot().tool_calls
    assert (record.name, record.is_error) == ("transfer_to_human", False)


async def test_an_interrupted_lead_in_cancels_the_transfer(autojump_clock: trio.abc.Clock) -> None:
    """A clear before the mark is echoed: the echo that follows is not "heard"; no transfer."""
    telephony = FakeTelephony()
    bridge = Bridge(tools=tools(telephony))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await lead_in_then(bridge, "transfer_to_human")
        [mark] = bridge.twilio.sent("mark")
        bridge.agent.clear()
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.echo_mark(mark)  # Twilio echoes pending marks right after a clear
        await trio.sleep(5)
        [(_, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
        assert is_error
        assert "interrupted" in result
        bridge.twilio.stop()
        await bridge.wait_done()
    assert telephony.requests == []
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "caller_hangup")


async def test_a_refused_transfer_keeps_the_call_going(autojump_clock: trio.abc.Clock) -> None:
    """Twilio refusing the update is an error result; the call then ends however it ends."""
    telephony = FakeTelephony(failure=TelephonyError("Call is not in-progress", code=21220))
    bridge = Bridge(tools=tools(telephony))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await lead_in_then(bridge, "transfer_to_human")
        bridge.twilio.echo_mark(bridge.twilio.sent("mark")[0])
        await trio.sleep(5)
        [(_, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
        assert is_error
        assert "did not go through" in result
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "caller_hangup")


async def test_twilio_stopping_the_stream_mid_transfer_is_the_transfer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """If Twilio's ``stop`` arrives before its REST answer, the call still ends ``transferred``."""
    bridge = Bridge()

    class StopsFirst(FakeTelephony):
        async def transfer(self, call_sid: str, number: str) -> None:
            bridge.twilio.stop()  # Twilio ends the stream while the HTTP answer is in flight
            await trio.sleep(1)
            await super().transfer(call_sid, number)

    telephony = StopsFirst()
    bridge.tools = tools(telephony)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await lead_in_then(bridge, "transfer_to_human")
        bridge.twilio.echo_mark(bridge.twilio.sent("mark")[0])
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("transferred", "transferred")


async def test_transfer_without_a_human_number_is_an_error(autojump_clock: trio.abc.Clock) -> None:
    """With no HUMAN_AGENT_NUMBER the agent is told transfers are unavailable."""
    telephony = FakeTelephony()
    bridge = Bridge(tools=tools(telephony, number=""))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.call_tool("call_t", "transfer_to_human", {"reason": "help"})
        await trio.sleep(1)
        bridge.twilio.stop()
        await bridge.wait_done()
    [(_, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
    assert is_error
    assert "not available" in result
    assert telephony.requests == []


async def test_end_call_lets_the_goodbye_play_then_hangs_up(autojump_clock: trio.abc.Clock) -> None:
    """``end_call`` waits for the goodbye's mark, hangs up through Twilio, ends ``agent_ended``."""
    telephony = FakeTelephony()
    bridge = Bridge(tools=tools(telephony))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await lead_in_then(bridge, "end_call")
        assert telephony.requests == []
        bridge.twilio.echo_mark(bridge.twilio.sent("mark")[0])
        await bridge.wait_done()
    assert telephony.requests == [("hang_up", bridge.call.call_sid, "")]
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "agent_ended")
    assert bridge.twilio.sent("media") == [audio(tag) for tag in range(5)]


async def test_end_call_still_ends_when_twilio_refuses_the_hang_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A failed REST hang-up does not keep the call open: closing the stream hangs up."""
    telephony = FakeTelephony(failure=TelephonyError("unreachable"))
    bridge = Bridge(tools=tools(telephony))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await lead_in_then(bridge, "end_call")
        bridge.twilio.echo_mark(bridge.twilio.sent("mark")[0])
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "agent_ended")


async def test_a_clear_right_behind_the_request_cancels_the_transfer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A clear that arrives before the tool even starts waiting still means "not heard"."""
    telephony = FakeTelephony()
    bridge = Bridge(tools=tools(telephony))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for tag in range(5):
            bridge.agent.say(audio(tag))
        bridge.agent.call_tool("call_t", "transfer_to_human", {"reason": "caller asked"})
        bridge.agent.clear()  # queued right behind the request, read before the tool runs
        await trio.sleep(5)
        for mark in bridge.twilio.sent("mark"):
            bridge.twilio.echo_mark(mark)
        await trio.sleep(5)
        bridge.twilio.stop()
        await bridge.wait_done()
    [(_, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
    assert is_error
    assert "interrupted" in result
    assert telephony.requests == []
    assert bridge.call.end_reason == "caller_hangup"


def test_a_line_transfer_is_the_transfer_tool_request() -> None:
    """Line's ``transfer_call`` takes the Managed agent's path: the ``transfer_to_human`` tool."""
    first, second = transfer_request("+15555550123", 1), transfer_request(None, 2)
    assert (first.name, first.tool_call_id, first.expects_response) == (
        "transfer_to_human",
        "transfer_call-1",
        False,
    )
    assert first.arguments == {
        "reason": "the agent asked (transfer_call)",
        "number": "+15555550123",
    }
    assert (second.tool_call_id, second.arguments["number"]) == ("transfer_call-2", None)
    assert "transfer_to_human" in tools(FakeTelephony()).tools


async def _wait_heard(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    return ToolResult({"heard": await context.control.wait_until_heard()})


async def test_two_tools_waiting_for_their_marks_at_once_both_get_them(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Two tool calls wait for the lead-in together: each places its own mark behind the audio,
    each echo settles its own waiter, more speech wakes both, and both answer heard."""
    bridge = Bridge(tools=ToolRegistry.of(Tool("wait_heard", _wait_heard)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for tag in range(5):
            bridge.agent.say(audio(tag))
        bridge.agent.call_tool("first", "wait_heard")
        bridge.agent.call_tool("second", "wait_heard")
        await trio.testing.wait_all_tasks_blocked()
        marks = bridge.twilio.sent("mark")
        assert len(marks) == len(set(marks)) == 2
        await trio.sleep(1)
        assert bridge.agent.sent("tool_result") == []  # nothing heard yet
        for mark in marks:
            bridge.twilio.echo_mark(mark)
        await trio.testing.wait_all_tasks_blocked()  # both settling on their own wake-ups
        bridge.agent.say(audio(9))  # the end of the sentence arrives: both must wait for it
        await trio.testing.wait_all_tasks_blocked()
        more = bridge.twilio.sent("mark")[2:]
        assert len(more) == 2  # each tool placed a new mark at once, not after its pause
        for mark in more:
            bridge.twilio.echo_mark(mark)
        await trio.sleep(1)
        results = bridge.agent.sent("tool_result")
        bridge.twilio.stop()
        await bridge.wait_done()
    assert sorted(results) == [  # type: ignore[type-var]
        ("first", '{"heard":true}', False),
        ("second", '{"heard":true}', False),
    ]
