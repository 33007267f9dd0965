"""The fault matrix, end to end: each row a failure over real sockets and a real database.

Rows covered elsewhere: agent 1011 mid-call, no ``session_ready``, agent unreachable, Twilio
socket dropped (tests/e2e/test_call.py); failing and crashing tools (tests/call/test_session.py);
SIGTERM with calls live (tests/app/test_drain.py).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import trio

from archer.cartesia import managed
from archer.db.spool import JsonlSpool
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.tcp_proxy import TcpProxy
from tests.e2e.test_call import running_system
from tests.helpers import audio, eventually


def _count(kind: type[object]):  # type: ignore[no-untyped-def]
    return lambda events: sum(isinstance(event, kind) for event in events)


async def test_agent_closing_1008_mid_call(sqlite_url: str) -> None:
    """Cartesia closing 1008 (it judged us in breach) fails the call; the record says so."""

    async def refuse(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.error("invalid_event", "bad dtmf digit", fatal=False))
        await peer.wait_for(lambda events: _count(managed.AudioInput)(events) >= 2)
        await peer.websocket.aclose(1008, "policy violation")

    async with running_system(sqlite_url, refuse) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            for tag in range(2):
                await system.caller.speak(audio(tag))
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("failed", "agent_error")
    assert "1008" in (stored.record.error or "")


async def test_agent_closing_in_the_middle_of_a_tool_call(sqlite_url: str) -> None:
    """The agent dies while a tool runs: the call fails and the tool call is still recorded."""

    async def die_mid_tool(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.client_tool_call("slow_1", "slow_echo", {}, expects_response=True))
        await trio.sleep(0.2)
        await peer.websocket.aclose(1011, "agent failed")

    async with running_system(sqlite_url, die_mid_tool) as system:
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    record = stored.record
    assert (record.status, record.end_reason) == ("failed", "agent_error")
    [tool] = record.tool_calls
    assert (tool.tool_call_id, tool.name, tool.finished_at) == ("slow_1", "slow_echo", None)


@pytest.fixture
async def postgres_behind_proxy(postgres_url: str, nursery: trio.Nursery) -> tuple[str, TcpProxy]:
    """``postgres_url`` reached through a proxy the test can cut (the database going down)."""
    url = sa.make_url(postgres_url)
    proxy = TcpProxy(target_port=url.port or 5432)
    port = await nursery.start(proxy.run)
    return url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False), proxy


async def test_database_down_when_the_webhook_arrives(
    postgres_behind_proxy: tuple[str, TcpProxy],
) -> None:
    """With PostgreSQL unreachable the caller hears the apology and Twilio hangs up."""
    url, proxy = postgres_behind_proxy

    async def unused(peer: AgentPeer) -> None:
        raise AssertionError("no call should reach the agent")

    async with running_system(url, unused) as system:
        proxy.cut()
        answer = await system.caller.dial()
        proxy.restore()
        assert answer.status == 200
        assert "<Say>" in answer.text
        assert answer.text.rstrip().endswith("<Hangup /></Response>")
        assert system.agent.peers == []


async def test_database_down_when_the_call_ends_spools_then_replays(
    postgres_behind_proxy: tuple[str, TcpProxy], tmp_path: object
) -> None:
    """The flush fails, the record goes to the spool, and lands once the database is back."""
    url, proxy = postgres_behind_proxy

    async def greet(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        await peer.send(
            managed.turn_ended(
                1, "assistant", "Hello.", interrupted=False, start_time=0.1, end_time=0.3
            )
        )

    async with running_system(url, greet, spool_replay_interval=0.5) as system:
        spool = JsonlSpool(system.settings_spool_path)
        await system.caller.dial()
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            peer = await system.peer()
            for tag in range(3):
                await system.caller.speak(audio(tag))
            await peer.wait_for(lambda events: _count(managed.AudioInput)(events) >= 3)
            proxy.cut()  # the database goes away mid-call
            await system.caller.stop()

            async def spooled() -> bool:
                return await spool.depth() > 0

            with trio.fail_after(STEP_TIMEOUT):
                await eventually(spooled)
            nursery.cancel_scope.cancel()
        proxy.restore()  # back: the replay task saves the record

        async def replayed() -> bool:
            return await spool.depth() == 0

        with trio.fail_after(STEP_TIMEOUT):
            await eventually(replayed)
        stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
    record = stored.record
    assert (record.status, record.end_reason) == ("completed", "caller_hangup")
    assert record.frames_in == 3
    assert [t.text for t in record.turns] == ["Hello."]
    assert record.ended_at is not None


async def test_status_callback_during_an_outage_is_spooled_then_lands(
    postgres_behind_proxy: tuple[str, TcpProxy],
) -> None:
    """Twilio does not retry a failed status callback: with PostgreSQL cut it is spooled (and
    answered 200), and once the database is back the replay sets twilio_status and duration."""
    url, proxy = postgres_behind_proxy

    async def greet(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        await peer.send(
            managed.turn_ended(
                1, "assistant", "Hello.", interrupted=False, start_time=0.1, end_time=0.3
            )
        )

    async with running_system(url, greet, spool_replay_interval=0.5) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            await system.peer()
            await caller.speak(audio(1))
            await caller.stop()
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        proxy.cut()
        answer = await caller.post(
            "/twilio/status",
            {**caller.webhook_fields(), "CallStatus": "completed", "CallDuration": "11"},
        )
        assert answer.status == 200
        assert await JsonlSpool(system.settings_spool_path).depth() == 1
        proxy.restore()
        stored = await system.wait_for_record(lambda s: s.twilio_status is not None)

        async def replayed() -> bool:
            return await JsonlSpool(system.settings_spool_path).depth() == 0

        with trio.fail_after(STEP_TIMEOUT):
            await eventually(replayed)
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 11)
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
