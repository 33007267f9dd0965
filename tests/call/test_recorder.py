"""The record written as the call goes (``archer.call.recorder``), against the fakes.

Autojump clock: the batching interval and the writes' timing are exact, nothing sleeps for real.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs
import trio
import trio.testing

from archer.call.recorder import RECORD_BATCH_SECONDS
from archer.call.records import CallRecord
from archer.call.session import bridge_call
from archer.call.state import CallState
from archer.call.tools import Tool, ToolContext, ToolRegistry, ToolResult
from tests.call.test_session import LIMITS, new_call
from tests.fakes.agent import FakeAgentConnector
from tests.fakes.store import FakeCallStore
from tests.fakes.twilio import FakeTwilio


class Bank:
    """A side-effecting tool that counts what it did, and a harmless one."""

    def __init__(self) -> None:
        self.frozen = 0

    async def freeze(self, context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        self.frozen += 1
        return ToolResult({"frozen": True})

    async def look(self, context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        await trio.sleep(0.5)
        return ToolResult({"balance": 12})

    def registry(self) -> ToolRegistry:
        return ToolRegistry.of(
            Tool("freeze_card", self.freeze, side_effect=True), Tool("balance", self.look)
        )


@attrs.define
class WatchedStore(FakeCallStore):
    """Notes, at each save, how many cards were frozen and whether the tool call had finished."""

    bank: Bank = attrs.Factory(Bank)
    written: list[tuple[int, datetime | None]] = attrs.Factory(list)

    async def save_call(self, record: CallRecord) -> None:
        [tool] = record.tool_calls
        self.written.append((self.bank.frozen, tool.finished_at))
        await super().save_call(record)


async def start(
    nursery: trio.Nursery, store: FakeCallStore, bank: Bank, call: CallState | None = None
) -> tuple[FakeTwilio, FakeAgentConnector]:
    twilio, connector = FakeTwilio(), FakeAgentConnector()
    nursery.start_soon(
        lambda: bridge_call(
            call or new_call(),
            twilio,
            connector,
            bank.registry(),
            limits=LIMITS,
            audio_format="mulaw_8000",
            store=store,
        )
    )
    await trio.testing.wait_all_tasks_blocked()
    return twilio, connector


async def test_each_turn_is_written_when_it_ends(autojump_clock: trio.abc.Clock) -> None:
    """At a turn's end the writer writes it at once, in progress, before the call ends."""
    store = FakeCallStore()
    async with trio.open_nursery() as nursery:
        twilio, connector = await start(nursery, store, Bank())
        connector.agent.turn(1, "assistant", "Hello.")
        await trio.testing.wait_all_tasks_blocked()
        first = store.calls[new_call().call_sid]
        connector.agent.turn(2, "user", "My card is gone.")
        await trio.testing.wait_all_tasks_blocked()
        second = store.calls[new_call().call_sid]
        twilio.stop()
    assert (first.status, first.end_reason, first.ended_at) == ("in_progress", None, None)
    assert [turn.text for turn in first.turns] == ["Hello."]
    # Only what changed since the last write the database took.
    assert [turn.text for turn in second.turns] == ["My card is gone."]
    assert store.saves == 2


async def test_other_changes_wait_for_the_batch_interval(autojump_clock: trio.abc.Clock) -> None:
    """A finished tool call with no turn ending is written within RECORD_BATCH_SECONDS."""
    store = FakeCallStore()
    async with trio.open_nursery() as nursery:
        twilio, connector = await start(nursery, store, Bank())
        connector.agent.call_tool("t1", "balance")
        await trio.sleep(0.6)  # the tool finished
        assert store.saves == 0
        await trio.sleep(RECORD_BATCH_SECONDS)
        [tool] = store.calls[new_call().call_sid].tool_calls
        twilio.stop()
    assert (tool.name, tool.is_error) == ("balance", False)
    assert tool.finished_at is not None


async def test_a_side_effect_is_written_before_it_acts_and_after(
    autojump_clock: trio.abc.Clock,
) -> None:
    bank = Bank()
    store = WatchedStore(bank=bank)
    async with trio.open_nursery() as nursery:
        twilio, connector = await start(nursery, store, bank)
        connector.agent.call_tool("t1", "freeze_card", {"last4": "2207"})
        await trio.testing.wait_all_tasks_blocked()
        twilio.stop()
    # Before: the row (started, unfinished) while nothing was frozen; after: finished.
    assert store.written[0] == (0, None)
    frozen, finished_at = store.written[1]
    assert frozen == 1
    assert finished_at is not None
    assert connector.agent.sent("tool_result")


async def test_a_side_effect_whose_audit_row_cannot_be_written_does_not_act(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The database is down: the card is not frozen and the agent hears why."""
    store = FakeCallStore(down=True)
    bank = Bank()
    async with trio.open_nursery() as nursery:
        twilio, connector = await start(nursery, store, bank)
        connector.agent.call_tool("t1", "freeze_card", {"last4": "2207"})
        await trio.testing.wait_all_tasks_blocked()
        twilio.stop()
    assert bank.frozen == 0
    [(tool_call_id, text, is_error)] = connector.agent.sent("tool_result")  # type: ignore[misc]
    assert (tool_call_id, is_error) == ("t1", True)
    assert "not done" in text


async def test_a_failed_write_never_ends_the_call(autojump_clock: trio.abc.Clock) -> None:
    """Writes fail (logged, counted) and the call goes on; the final flush will try again."""
    store = FakeCallStore(down=True)
    call = new_call()
    async with trio.open_nursery() as nursery:
        twilio, connector = await start(nursery, store, Bank(), call)
        connector.agent.turn(1, "assistant", "Hello.")
        await trio.sleep(2 * RECORD_BATCH_SECONDS)
        connector.agent.turn(2, "assistant", "Still here.")
        await trio.testing.wait_all_tasks_blocked()
        assert call.end_reason is None
        twilio.stop()
    assert (call.status, call.end_reason) == ("completed", "caller_hangup")
    assert call.db_write_failures >= 2
    assert call.db_writes == 0
    assert [turn.text for turn in call.snapshot().turns] == ["Hello.", "Still here."]
