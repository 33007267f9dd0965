"""Issue 16: a failed agent session is replaced, or the caller goes to a person.

Tier: call. ``bridge_call`` on memory-channel fakes with trio's autojump clock; the connector
here hands out a scripted sequence of sessions and refusals.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from archer.audio.hold import hold_frames
from archer.call.events import TurnStarted
from archer.call.ports import AgentSession
from archer.call.reconnect import ReconnectPolicy, is_retryable
from archer.call.session import bridge_call
from archer.call.state import CallState
from archer.call.tools import Tool, ToolContext, ToolRegistry, ToolResult
from archer.errors import (
    AgentClosedError,
    AgentFatalError,
    AgentIdleError,
    AgentUnavailableError,
    AgentUnresponsiveError,
    CartesiaProtocolError,
)
from archer.settings import CallLimits
from tests.call.test_session import new_call
from tests.fakes.agent import FakeAgent
from tests.fakes.twilio import FakeTwilio
from tests.helpers import audio

LIMITS = CallLimits(tool_timeout=30.0, twilio_media_timeout=3600.0, max_call_seconds=3600.0)
POLICY = ReconnectPolicy(attempts=3, window=10.0)
HUMAN = "+15555550199"
REFUSED = AgentUnavailableError("upgrade refused: 503", end_reason="agent_rejected")


@attrs.define
class FakeAgentSequence:
    """Opens the next of ``plan`` each time: a ``FakeAgent``, or an error to refuse with."""

    plan: list[FakeAgent | AgentUnavailableError]
    #: Seconds every connect after the first takes (a handshake over a real network).
    reconnect_delay: float = 0.3
    opened: int = 0
    sessions: list[AgentSession] = attrs.Factory(list)

    @asynccontextmanager
    async def open_session(self, session: AgentSession) -> AsyncIterator[FakeAgent]:
        await trio.sleep(self.reconnect_delay if self.opened else 0)
        step = self.plan[min(self.opened, len(self.plan) - 1)]
        self.opened += 1
        self.sessions.append(session)
        if isinstance(step, AgentUnavailableError):
            raise step
        yield step


async def _slow_balance(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    await trio.sleep(1.0)
    return ToolResult({"balance": 10})


@attrs.define
class FakeTransfers:
    """A ``transfer_to_human`` tool that ends the call the way the bank's tool does."""

    numbers: list[str] = attrs.Factory(list)

    async def transfer_to_human(
        self, context: ToolContext, arguments: Mapping[str, object]
    ) -> ToolResult:
        await context.control.wait_until_heard()
        context.control.expect("transferred", "transferred")
        self.numbers.append(HUMAN)
        context.control.end("transferred", "transferred")
        return ToolResult({"transferred": True})


async def run(
    call_plan: list[FakeAgent | AgentUnavailableError],
    twilio: FakeTwilio,
    *,
    policy: ReconnectPolicy = POLICY,
    tools: ToolRegistry | None = None,
    facts: Mapping[str, str | int | float | bool] | None = None,
) -> tuple[FakeAgentSequence, CallState]:
    connector = FakeAgentSequence(call_plan)
    call = new_call()
    await bridge_call(
        call,
        twilio,
        connector,
        tools or ToolRegistry.of(Tool("balance", _slow_balance)),
        limits=LIMITS,
        audio_format="mulaw_8000",
        reconnect=policy,
        facts=facts,
    )
    return connector, call


def test_which_failures_are_retried() -> None:
    """Abnormal close, unanswered pings, agent_failed and refusals are; the rest are not."""
    assert is_retryable(AgentClosedError(1011, "internal error"))
    assert is_retryable(AgentClosedError(None, "network"))
    assert is_retryable(AgentUnresponsiveError("no pong"))
    assert is_retryable(AgentFatalError("agent_failed", "crashed"))
    assert is_retryable(REFUSED)
    assert not is_retryable(AgentFatalError("invalid_event", "bad"))
    assert not is_retryable(AgentIdleError("idle"))
    assert not is_retryable(CartesiaProtocolError("garbage"))


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    delays = [POLICY.delay(attempt, rng) for attempt in (1, 2, 3, 8) for _ in range(50)]
    assert all(0 <= delay <= POLICY.max_delay for delay in delays)
    assert max(delays[:50]) <= POLICY.base_delay
    assert len(set(delays)) > 100  # jitter: no two instances back off in step


async def test_a_1011_mid_turn_is_replaced_by_a_new_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Hold tone at once, the new session's greeting after it, the dead turn never again; the
    tool in flight is finished and recorded but its result goes to nobody."""
    first, second = FakeAgent(agent_call_id="ac_first"), FakeAgent(agent_call_id="ac_second")
    twilio = FakeTwilio()
    twilio.hold_playback()  # the first turn's audio piles up, as over a slow socket
    first.turn(1, "user", "what is my balance")
    first.call_tool("t1", "balance")
    first.emit(TurnStarted(2, "assistant", 1.0))
    for tag in range(10):
        first.say(audio(tag))
    first.emit(AgentClosedError(1011, "internal error"))
    second.turn(1, "assistant", "Sorry about that, where were we?")
    second.say(audio(200))

    async with trio.open_nursery() as nursery:

        async def caller() -> None:
            await trio.sleep(0.05)
            twilio.release_playback()
            twilio.speak(audio(50))  # said during the gap: dropped, not queued
            await trio.sleep(5)
            twilio.stop()

        nursery.start_soon(caller)
        _connector, call = await run([first, second], twilio)
    media = twilio.sent("media")
    hold = set(hold_frames())
    first_hold = next(i for i, payload in enumerate(media) if payload in hold)
    after_hold = media[first_hold:]
    assert not {audio(tag) for tag in range(10)} & set(after_hold)
    assert audio(200) in after_hold
    assert after_hold.index(audio(200)) > 0
    assert "clear" in [kind for kind, _ in twilio.outbound]
    assert call.agent_reconnects == 1
    assert call.agent_call_ids == ["ac_first", "ac_second"]
    assert call.end_reason == "caller_hangup"
    record = call.snapshot()
    assert (record.agent_reconnects, record.agent_call_ids) == (1, ("ac_first", "ac_second"))
    [tool] = record.tool_calls
    assert tool.finished_at is not None
    assert "10" in (tool.result or "")
    assert first.sent("tool_result") == []
    assert second.sent("tool_result") == []
    # The new session's turn is numbered after the dead session's turns.
    assert [turn.turn for turn in record.turns] == [1, 2, 3]
    assert audio(50) not in second.sent("audio")


@pytest.mark.parametrize("first_connect_fails", [False, True])
async def test_refused_reconnects_transfer_to_a_person(
    autojump_clock: trio.abc.Clock, first_connect_fails: bool
) -> None:
    """The budget spent: the apology, then transfer_to_human → agent_lost_transferred."""
    plan: list[FakeAgent | AgentUnavailableError] = [REFUSED]
    if not first_connect_fails:
        dying = FakeAgent()
        dying.emit(AgentClosedError(1011, "internal error"))
        plan = [dying, REFUSED]
    twilio, transfers = FakeTwilio(), FakeTransfers()

    async def echo_marks() -> None:
        while True:
            await trio.sleep(0.5)
            for name in twilio.sent("mark"):
                twilio.echo_mark(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_marks)
        tools = ToolRegistry.of(Tool("transfer_to_human", transfers.transfer_to_human))
        connector, call = await run(
            plan, twilio, policy=attrs.evolve(POLICY, human_agent_number=HUMAN), tools=tools
        )
        nursery.cancel_scope.cancel()
    assert (call.status, call.end_reason) == ("transferred", "agent_lost_transferred")
    assert transfers.numbers == [HUMAN]
    assert connector.opened == 4  # the first session (or its failed connect) and 3 attempts
    assert call.agent_reconnect_failures == (4 if first_connect_fails else 3)
    media = twilio.sent("media")
    assert set(hold_frames()) & set(media)
    assert len(media) > 100  # the apology followed the hold tone


@pytest.mark.parametrize("first_connect_fails", [False, True])
async def test_without_a_number_the_caller_hears_the_apology_and_is_hung_up_on(
    autojump_clock: trio.abc.Clock, first_connect_fails: bool
) -> None:
    plan: list[FakeAgent | AgentUnavailableError] = [REFUSED]
    if not first_connect_fails:
        dying = FakeAgent()
        dying.emit(AgentFatalError("agent_failed", "agent process died"))
        plan = [dying, REFUSED]
    twilio = FakeTwilio()
    _connector, call = await run(plan, twilio)
    assert (call.status, call.end_reason) == ("failed", "agent_lost")
    assert call.agent_reconnects == 0
    assert len(twilio.sent("media")) > 100


async def test_a_clean_hang_up_is_never_retried(autojump_clock: trio.abc.Clock) -> None:
    agent = FakeAgent()
    agent.hang_up()
    connector, call = await run([agent], FakeTwilio())
    assert connector.opened == 1
    assert call.end_reason == "agent_hangup"


async def test_a_protocol_error_is_not_retried(autojump_clock: trio.abc.Clock) -> None:
    agent = FakeAgent()
    agent.emit(CartesiaProtocolError("not JSON"))
    connector, call = await run([agent], FakeTwilio())
    assert connector.opened == 1
    assert call.end_reason == "protocol_error"


async def test_an_agent_that_dies_at_once_every_time_spends_one_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Sessions that fail within the window of opening belong to one outage: no endless loop."""
    agents = [FakeAgent(agent_call_id=f"ac_{n}") for n in range(10)]
    for agent in agents:
        agent.emit(AgentClosedError(1011, "internal error"))
    connector, call = await run(list(agents), FakeTwilio())
    assert call.end_reason == "agent_lost"
    assert connector.opened == 1 + POLICY.attempts
    assert call.agent_reconnects == POLICY.attempts


async def test_a_replacing_session_is_told_it_resumes_only_when_configured(
    autojump_clock: trio.abc.Clock,
) -> None:
    """AGENT_RESUME_VARIABLES reach the new session, never the first (off by default)."""
    for resume, expected in (({}, {}), ({"resumed": "true"}, {"resumed": "true"})):
        dying, second = FakeAgent(), FakeAgent(agent_call_id="ac_second")
        dying.emit(AgentClosedError(1011, "internal error"))
        second.hang_up()
        connector, call = await run(
            [dying, second], FakeTwilio(), policy=attrs.evolve(POLICY, resume_variables=resume)
        )
        first_session, second_session = connector.sessions
        assert first_session.extra_variables == {}
        assert second_session.extra_variables == expected
        assert call.end_reason == "agent_hangup"


async def test_a_replacing_session_gets_the_same_outbound_facts(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An outbound call's purpose and payment facts go to every session, a replacement too."""
    facts = {"call_purpose": "fraud_alert", "transaction_id": 42, "merchant": "Example Store"}
    dying, second = FakeAgent(), FakeAgent(agent_call_id="ac_second")
    dying.emit(AgentClosedError(1011, "internal error"))
    second.hang_up()
    connector, call = await run([dying, second], FakeTwilio(), facts=facts)
    assert call.agent_reconnects == 1
    assert [dict(session.facts) for session in connector.sessions] == [facts, facts]
    # The agent talks to the customer Archer rang, not to the bank's own number.
    assert {session.caller_number for session in connector.sessions} == {call.to_number}


async def test_an_inbound_call_sends_no_facts(autojump_clock: trio.abc.Clock) -> None:
    agent = FakeAgent()
    agent.hang_up()
    connector, call = await run([agent], FakeTwilio())
    assert [dict(session.facts) for session in connector.sessions] == [{}]
    assert [session.caller_number for session in connector.sessions] == [call.from_number]
