"""``bridge_call``/``run_call`` against memory-channel fakes, on trio's autojump clock.

These cover the orderings of the per-call nursery without sockets: who ends the call, what is
recorded, what is cancelled, and that audio never waits on a tool.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial

import attrs
import pytest
import structlog
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from archer.audio.transcoder import transcoder_for
from archer.call.agent_side import run_agent_side
from archer.call.control import CallControl
from archer.call.events import TurnStarted
from archer.call.items import CLEAR_PLAYBACK, AgentChunk, DownlinkItem, UplinkItem
from archer.call.playback import Playback
from archer.call.pumps import DOWNLINK_BUFFER
from archer.call.records import CallRecord
from archer.call.session import bridge_call, flush_call_record
from archer.call.state import CallState
from archer.call.tools import (
    MAX_RESULT_BYTES,
    CallerVerification,
    Tool,
    ToolContext,
    ToolRegistry,
    ToolResult,
    ToolRunner,
)
from archer.errors import AgentClosedError, AgentFatalError, AgentUnavailableError, ToolError
from archer.metrics import Metrics
from archer.settings import CallLimits
from tests.fakes.agent import FakeAgent, FakeAgentConnector
from tests.fakes.store import FakeCallStore, FakeSpool
from tests.fakes.twilio import FakeTwilio
from tests.helpers import audio, live_archer_tasks

# The fakes send caller media only when a test says so (Twilio would every 20 ms), so a quiet
# fake is not a lost stream here; tests/call/test_lost_stream.py sets its own media timeout.
LIMITS = CallLimits(
    tool_timeout=2.0,
    agent_ping_interval=20.0,
    max_call_seconds=3600.0,
    twilio_media_timeout=3600.0,
)


async def _echo(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    await trio.sleep(0.1)
    return ToolResult({"echo": dict(arguments), "call_sid": context.call_sid})


async def _slow(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    await trio.sleep(60)
    return ToolResult({"never": True})


async def _crash(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    raise RuntimeError("bug in a tool")


async def _refuse(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    raise ToolError("verify the caller first")


async def _huge(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
    return ToolResult("é" * 10_000)


TOOLS = ToolRegistry.of(
    Tool("echo", _echo),
    Tool("slow", _slow),
    Tool("crash", _crash),
    Tool("refuse", _refuse),
    Tool("huge", _huge),
)


def new_call() -> CallState:
    now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    return CallState(
        call_sid="CA" + "1" * 32,
        stream_sid="MZ" + "2" * 32,
        started_at=now,
        connected_at=now,
        connected_clock=trio.current_time(),
        customer_id=7,
        from_number="+15555550101",
        to_number="+15555550000",
    )


@attrs.define
class Bridge:
    """One call under test: the fakes around it and a way to wait for its end."""

    call: CallState = attrs.Factory(new_call)
    twilio: FakeTwilio = attrs.Factory(FakeTwilio)
    connector: FakeAgentConnector = attrs.Factory(FakeAgentConnector)
    tools: ToolRegistry = TOOLS
    done: trio.Event = attrs.Factory(trio.Event)
    #: These tests check that keys are forwarded in order; DTMF_TO_AGENT's default (off) and
    #: keypad capture are tested in tests/call/test_keypad.py.
    dtmf_to_agent: bool = True

    @property
    def agent(self) -> FakeAgent:
        return self.connector.agent

    async def run(
        self,
        limits: CallLimits = LIMITS,
        audio_format: str = "mulaw_8000",
        agent_batch_frames: int = 1,
    ) -> None:
        try:
            await bridge_call(
                self.call,
                self.twilio,
                self.connector,
                self.tools,
                limits=limits,
                audio_format=audio_format,
                agent_batch_frames=agent_batch_frames,
                dtmf_to_agent=self.dtmf_to_agent,
            )
        finally:
            self.done.set()

    async def wait_done(self) -> None:
        with trio.fail_after(7200):
            await self.done.wait()


@pytest.fixture
async def bridge() -> Bridge:
    return Bridge()


async def test_audio_passes_through_both_ways_in_order(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """Caller payloads reach the agent byte-for-byte and in order; agent audio reaches Twilio."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for tag in range(20):
            bridge.twilio.speak(audio(tag))
            bridge.agent.say(audio(100 + tag))
            await trio.sleep(0.02)
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert bridge.agent.sent("audio") == [audio(tag) for tag in range(20)]
    assert bridge.twilio.sent("media") == [audio(100 + tag) for tag in range(20)]
    assert (bridge.call.frames_in, bridge.call.frames_out, bridge.call.frames_dropped) == (
        20,
        20,
        0,
    )
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "caller_hangup")
    assert bridge.call.agent_call_id == "ac_fake0001"
    assert bridge.connector.closed
    assert bridge.connector.sessions[0].call_sid == bridge.call.call_sid
    assert bridge.connector.sessions[0].customer_id == 7


async def test_twilio_socket_dropped_without_stop(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A closed Twilio socket ends the call normally as ``twilio_disconnected``."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.twilio.speak(audio(1))
        bridge.agent.turn(1, "assistant", "Hello, how can I help?")
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.hang_up()
        await bridge.wait_done()
        assert live_archer_tasks() == []
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "twilio_disconnected")
    assert [t.text for t in bridge.call.snapshot().turns] == ["Hello, how can I help?"]


async def test_agent_hangup_ends_the_call(bridge: Bridge, autojump_clock: trio.abc.Clock) -> None:
    """The agent closing cleanly ends the call as ``agent_hangup`` and stops the Twilio reader."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.turn(1, "assistant", "Goodbye")
        bridge.agent.hang_up()
        await bridge.wait_done()
        assert live_archer_tasks() == []
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "agent_hangup")


async def test_agent_closing_1011_fails_the_call_and_keeps_the_turns(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """An abnormal agent close fails the call, names the cause, keeps turns, cancels every task."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.turn(1, "assistant", "Welcome to the bank.")
        bridge.agent.turn(2, "user", "What is my balance?")
        bridge.agent.emit(AgentClosedError(1011, "agent failed"))
        await bridge.wait_done()
        assert live_archer_tasks() == []
    record = bridge.call.snapshot()
    assert (record.status, record.end_reason) == ("failed", "agent_error")
    assert "1011" in (record.error or "")
    assert [(t.turn, t.role, t.text) for t in record.turns] == [
        (1, "assistant", "Welcome to the bank."),
        (2, "user", "What is my balance?"),
    ]


async def test_fatal_agent_error_fails_the_call(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A fatal ``error`` event fails the call with its code in the record."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.emit(AgentFatalError("agent_failed", "model crashed"))
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("failed", "agent_error")
    assert "agent_failed" in (bridge.call.error or "")


@pytest.mark.parametrize(
    "end_reason", ["agent_unreachable", "agent_handshake_timeout", "agent_rejected"]
)
async def test_agent_unavailable_fails_the_call(
    end_reason: str, autojump_clock: trio.abc.Clock
) -> None:
    """A connector failure is recorded with the end reason it names; Twilio is never read."""
    bridge = Bridge(
        connector=FakeAgentConnector(failure=AgentUnavailableError("nope", end_reason=end_reason))
    )
    bridge.twilio.speak(audio(1))
    await bridge.run()
    assert (bridge.call.status, bridge.call.end_reason, bridge.call.error) == (
        "failed",
        end_reason,
        "nope",
    )
    assert bridge.call.frames_in == 0


async def test_clear_reaches_twilio_and_no_queued_audio_follows(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """After the agent's clear, Twilio gets ``clear`` and none of the audio queued before it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.twilio.hold_playback()  # Twilio's socket is slow: agent audio queues up
        for tag in range(10):
            bridge.agent.say(audio(tag))
        await trio.testing.wait_all_tasks_blocked()
        bridge.agent.clear()
        bridge.agent.say(audio(49))  # the end of the interrupted turn, still arriving: dropped
        bridge.agent.emit(TurnStarted(2, "assistant", 2.0))
        bridge.agent.say(audio(50))  # the next turn, after the interruption
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.release_playback()
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    kinds = [kind for kind, _ in bridge.twilio.outbound]
    clear_at = kinds.index("clear")
    # At most the one chunk that was already being written when the clear came in.
    assert clear_at <= 1
    assert bridge.twilio.outbound[clear_at + 1 :] == [("media", audio(50))]


async def test_dtmf_reaches_the_agent(bridge: Bridge, autojump_clock: trio.abc.Clock) -> None:
    """A key the caller presses is sent to the agent in order with the audio around it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.twilio.speak(audio(1))
        bridge.twilio.press("5")
        bridge.twilio.speak(audio(2))
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert bridge.agent.received == [("audio", audio(1)), ("dtmf", "5"), ("audio", audio(2))]


async def test_batching_joins_two_frames_per_agent_message_and_keys_flush_it(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """With 40 ms batches the agent gets two frames' audio per message, in order; a key sends
    the frame held before it rather than overtaking it."""
    frames = [bytes([tag]) * 160 for tag in range(5)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(bridge.run, agent_batch_frames=2))
        for frame in frames[:3]:
            bridge.twilio.speak(base64.b64encode(frame).decode())
        bridge.twilio.press("5")
        for frame in frames[3:]:
            bridge.twilio.speak(base64.b64encode(frame).decode())
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    received = [
        (kind, base64.b64decode(str(value)) if kind == "audio" else value)
        for kind, value in bridge.agent.received
    ]
    assert received == [
        ("audio", frames[0] + frames[1]),
        ("audio", frames[2]),
        ("dtmf", "5"),
        ("audio", frames[3] + frames[4]),
    ]
    assert bridge.call.frames_in == 5


async def test_tool_call_gets_its_result_and_is_recorded_masked(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A tool call is answered with its JSON result and recorded with secrets masked."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.call_tool("call_1", "echo", {"pin": "1234", "account_type": "checking"})
        await trio.sleep(1)
        bridge.twilio.stop()
        await bridge.wait_done()
    [(tool_call_id, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
    assert (tool_call_id, is_error) == ("call_1", False)
    assert '"account_type":"checking"' in result
    assert bridge.call.call_sid in result
    [recorded] = bridge.call.snapshot().tool_calls
    assert recorded.arguments == {"pin": "***", "account_type": "checking"}
    # The echo tool sent the PIN back: the agent gets it, the record never holds it.
    assert '"pin":"1234"' in result
    assert recorded.result == result.replace("1234", "***")
    assert recorded.finished_at is not None


async def test_slow_tool_times_out_while_audio_keeps_flowing(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A tool past its timeout becomes an ``is_error`` result; audio flows both ways meanwhile."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.call_tool("call_slow", "slow")
        for tag in range(100):  # two seconds of audio while the tool runs
            bridge.twilio.speak(audio(tag))
            bridge.agent.say(audio(tag))
            await trio.sleep(0.02)
        await trio.sleep(1)
        assert bridge.call.frames_in == 100
        assert bridge.call.frames_out == 100
        bridge.twilio.stop()
        await bridge.wait_done()
    [(tool_call_id, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
    assert (tool_call_id, is_error) == ("call_slow", True)
    assert "timed out" in result
    assert bridge.call.end_reason == "caller_hangup"


@pytest.mark.parametrize(
    ("tool", "expected"),
    [("crash", "crash failed"), ("refuse", "verify the caller first"), ("missing", "unknown tool")],
)
async def test_failing_tools_become_error_results(
    tool: str, expected: str, bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A crashing, refusing or unknown tool is an ``is_error`` result and the call goes on."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.call_tool("call_x", tool)
        await trio.sleep(1)
        bridge.twilio.speak(audio(1))
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    [(_, result, is_error)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
    assert is_error
    assert expected in result
    assert bridge.agent.speech() == [audio(1)]
    assert bridge.call.status == "completed"


async def test_tool_results_are_capped_at_4096_bytes(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """An oversized result is cut to Cartesia's limit on a character boundary, saying so."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.call_tool("call_big", "huge")
        await trio.sleep(1)
        bridge.twilio.stop()
        await bridge.wait_done()
    [(_, result, _)] = bridge.agent.sent("tool_result")  # type: ignore[misc]
    assert len(result.encode()) <= MAX_RESULT_BYTES
    assert result.endswith("[cut off: result too large]")


async def test_a_flood_of_tool_calls_is_answered_busy_without_stalling(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """Past the running and queued slots, tool calls get "busy" at once; every call is answered."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for n in range(20):
            bridge.agent.call_tool(f"call_{n}", "slow")
        await trio.sleep(0.1)
        busy = [r for r in bridge.agent.sent("tool_result") if "too many" in r[1]]  # type: ignore[index]
        assert len(busy) == 20 - 4 - 4
        await trio.sleep(10)
        bridge.twilio.stop()
        await bridge.wait_done()
    assert len(bridge.agent.sent("tool_result")) == 20
    assert bridge.call.tool_call_count == 20


async def test_unanswered_ping_fails_the_call(autojump_clock: trio.abc.Clock) -> None:
    """An agent that stops answering pings fails the call as ``agent_unresponsive``."""
    bridge = Bridge(connector=FakeAgentConnector(agent=FakeAgent(ping_delay=math.inf)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("failed", "agent_unresponsive")
    assert trio.current_time() == pytest.approx(40, abs=1)


async def test_calls_are_cut_at_the_maximum_length(autojump_clock: trio.abc.Clock) -> None:
    """A call reaching ``max_call_seconds`` ends as ``max_duration``."""
    bridge = Bridge()
    limits = attrs.evolve(LIMITS, max_call_seconds=300.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, limits)
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "max_duration")
    assert trio.current_time() == pytest.approx(300, abs=1)
    assert bridge.agent.pings >= 14


async def test_malformed_twilio_frames_are_skipped(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """Bad frames between good ones are dropped and the call goes on."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for tag in range(5):
            bridge.twilio.garble()
            bridge.twilio.speak(audio(tag))
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert bridge.agent.sent("audio") == [audio(tag) for tag in range(5)]
    assert bridge.call.end_reason == "caller_hangup"


def frames_total(metrics: Metrics, *, direction: str, outcome: str) -> float:
    """One ``archer_frames_total`` sample as ``/metrics`` shows it (0 when absent)."""
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            if sample.name == "archer_frames_total" and sample.labels == {
                "direction": direction,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


async def test_caller_audio_is_dropped_not_queued_when_the_agent_stalls(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A stalled agent socket costs dropped (counted) caller frames, never a blocked reader."""
    bridge.agent.stall_audio = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for tag in range(50):
            bridge.twilio.speak(audio(tag))
        bridge.twilio.stop()
        await bridge.wait_done()
    assert bridge.call.frames_in == 50
    assert bridge.call.frames_dropped == 50 - 1 - 10  # one in flight, ten buffered
    assert bridge.call.frames_dropped_to_agent == 50 - 1 - 10
    assert bridge.call.frames_dropped_to_caller == 0
    assert bridge.call.end_reason == "caller_hangup"
    metrics = Metrics()
    metrics.call_started()
    metrics.call_finished(bridge.call.summary(), bridge.call.snapshot())
    assert frames_total(metrics, direction="to_agent", outcome="dropped") == 39
    assert 'direction="either"' not in metrics.render()[0].decode()


async def test_agent_audio_is_dropped_and_counted_towards_the_caller_when_twilio_stalls(
    bridge: Bridge, autojump_clock: trio.abc.Clock
) -> None:
    """A stalled Twilio socket costs dropped agent frames, counted by direction in /metrics."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.twilio.hold_playback()
        for tag in range(DOWNLINK_BUFFER + 20):
            bridge.agent.say(audio(tag))
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.release_playback()
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    dropped = DOWNLINK_BUFFER + 20 - 1 - DOWNLINK_BUFFER  # one in flight, the rest buffered
    assert (bridge.call.frames_dropped_to_caller, bridge.call.frames_dropped_to_agent) == (
        dropped,
        0,
    )
    assert bridge.call.frames_out == DOWNLINK_BUFFER + 1
    metrics = Metrics()
    metrics.call_started()
    metrics.call_finished(bridge.call.summary(), bridge.call.snapshot())
    assert frames_total(metrics, direction="to_caller", outcome="dropped") == dropped
    assert frames_total(metrics, direction="to_caller", outcome="sent") == (DOWNLINK_BUFFER + 1)
    assert 'direction="either"' not in metrics.render()[0].decode()


async def test_flush_survives_cancellation_and_a_dead_store(autojump_clock: trio.abc.Clock) -> None:
    """The flush writes through a cancelled scope; a dead store sends the record to the spool."""
    store, spool = FakeCallStore(), FakeSpool()
    call = new_call()
    call.finish("completed", "caller_hangup")
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await flush_call_record(store, spool, call.snapshot(), timeout=5)
    assert store.calls[call.call_sid].end_reason == "caller_hangup"
    assert spool.records == []
    store.down = True
    assert not await flush_call_record(store, spool, call.snapshot(), timeout=5)
    assert [record.call_sid for record in spool.records] == [call.call_sid]


async def test_a_hung_store_is_given_up_on_at_the_flush_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A save that never returns costs the flush timeout, then the record is spooled."""

    class HungStore(FakeCallStore):
        async def save_call(self, record: CallRecord) -> None:
            await trio.sleep_forever()

    spool = FakeSpool()
    call = new_call()
    call.finish("completed", "caller_hangup")
    started = trio.current_time()
    assert not await flush_call_record(HungStore(), spool, call.snapshot(), timeout=5)
    assert trio.current_time() - started == pytest.approx(5)
    assert len(spool.records) == 1


async def test_when_even_the_spool_fails_the_record_is_logged(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Database down and disk full: the whole record goes to the log, and nothing raises."""
    store, spool = FakeCallStore(down=True), FakeSpool(broken=True)
    call = new_call()
    call.finish("completed", "caller_hangup")
    with structlog.testing.capture_logs() as logs:
        assert not await flush_call_record(store, spool, call.snapshot(), timeout=5)
    [entry] = [e for e in logs if e["event"] == "call.spool_failed"]
    assert entry["record"]["call_sid"] == call.call_sid
    assert entry["record"]["from_number"] == "***0101"  # masked even here


async def test_the_agent_side_ends_without_closing_the_twilio_sides_channels(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``run_agent_side`` works on clones: when the agent hangs up, the channel ends the Twilio
    side holds still work (the ground for replacing an agent session, issue 16)."""
    call, agent = new_call(), FakeAgent()
    uplink_send, uplink_receive = trio.open_memory_channel[UplinkItem](2)
    downlink_send, downlink_receive = trio.open_memory_channel[DownlinkItem](2)
    playback = Playback()
    runner = ToolRunner(
        registry=TOOLS,
        context=ToolContext(
            call_sid=call.call_sid,
            customer_id=None,
            verification=CallerVerification(),
            control=CallControl(call, playback, downlink_send.clone(), trio.CancelScope()),
        ),
        call=call,
        agent=agent,
        timeout=1.0,
    )
    hung_up: list[bool] = []
    with uplink_send, uplink_receive, downlink_send, downlink_receive:
        agent.say(audio(1))
        agent.hang_up()
        await run_agent_side(
            agent,
            uplink_receive.clone(),
            downlink_send.clone(),
            call,
            playback,
            transcoder_for("mulaw_8000", quality="HQ"),
            runner,
            ping_interval=LIMITS.agent_ping_interval,
            on_hangup=lambda: hung_up.append(True),
        )
        assert hung_up == [True]
        # The Twilio side's ends are still open: nothing is broken or at an end.
        uplink_send.send_nowait(audio(3))
        assert uplink_receive.receive_nowait() == audio(3)
        downlink_send.send_nowait(CLEAR_PLAYBACK)
        chunk = downlink_receive.receive_nowait()
        assert isinstance(chunk, AgentChunk)
        assert chunk.payload == audio(1)
        assert downlink_receive.receive_nowait() is CLEAR_PLAYBACK
