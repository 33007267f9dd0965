"""A Line agent (Calls API) failing in the ways Cartesia documents, each with its own end reason.

The agent here is a few lines of trio-websocket speaking ``archer.cartesia.line``; Archer runs
with ``CARTESIA_PROTOCOL=line``. The whole conversation on both protocols is in
``tests/e2e/test_protocols.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio_websocket

from archer.call.records import CallRecord
from archer.cartesia import line
from archer.settings import CallLimits
from tests.e2e.peers import STEP_TIMEOUT
from tests.e2e.test_call import AgentPeer, running_system
from tests.helpers import audio

LineBehaviour = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


async def serve_line_agent(
    behaviour: LineBehaviour, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        assert request.path.startswith("/agents/stream/")
        websocket = await request.accept()
        start = line.parse_client_event(await websocket.get_message())
        assert isinstance(start, line.Start)
        assert start.metadata["call_sid"].startswith("CA")
        await behaviour(websocket)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handle, "127.0.0.1", 0, None)
        task_status.started(f"ws://127.0.0.1:{server.port}")


async def unused(peer: AgentPeer) -> None:
    raise AssertionError("the Managed test agent is not used here")


async def run_line_call(
    behaviour: LineBehaviour, database_url: str, *, limits: CallLimits | None = None
) -> CallRecord:
    """One call from a caller to Archer to the Line agent ``behaviour``; its stored record."""
    async with trio.open_nursery() as outer:
        url = await outer.start(serve_line_agent, behaviour)
        async with running_system(
            database_url, unused, protocol="line", agent_server_url=url, limits=limits
        ) as system:
            await system.caller.dial()
            async with trio.open_nursery() as nursery:
                await system.caller.connect(nursery)
                for tag in range(3):
                    await system.caller.speak(audio(tag))
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    return stored.record


async def ack_then(websocket: trio_websocket.WebSocketConnection) -> None:
    await websocket.send_message(line.ack("sid_test", {"input_format": "mulaw_8000"}))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_ack_within_the_deadline(database_url: str) -> None:
    """A Line agent that never acknowledges ``start`` fails the call as a handshake timeout."""

    async def silent(websocket: trio_websocket.WebSocketConnection) -> None:
        await trio.sleep(STEP_TIMEOUT)

    record = await run_line_call(silent, database_url, limits=CallLimits(agent_ready_timeout=0.5))
    assert (record.status, record.end_reason) == ("failed", "agent_handshake_timeout")
    assert "no ack" in (record.error or "")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_idle_close_is_recorded_as_such(database_url: str) -> None:
    """Close 1000 "connection idle timeout" is the agent's idle rule, not a hang-up."""

    async def idle(websocket: trio_websocket.WebSocketConnection) -> None:
        await ack_then(websocket)
        await trio.sleep(0.2)
        await websocket.aclose(1000, line.IDLE_TIMEOUT)

    record = await run_line_call(idle, database_url)
    assert (record.status, record.end_reason) == ("failed", "agent_idle_timeout")
    assert record.agent_call_id == "sid_test"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_close_mid_call(database_url: str) -> None:
    """An abnormal close after some audio fails the call as ``agent_error``."""

    async def die(websocket: trio_websocket.WebSocketConnection) -> None:
        await ack_then(websocket)
        for tag in range(3):
            await websocket.send_message(line.media_output("sid_test", audio(tag)))
        await trio.sleep(0.2)
        await websocket.aclose(1011, "agent failed")

    record = await run_line_call(die, database_url)
    assert (record.status, record.end_reason) == ("failed", "agent_error")
    assert "1011" in (record.error or "")
    assert record.frames_out == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_call_ended_by_agent_is_a_hangup(database_url: str) -> None:
    """Close 1000 "call ended by agent, reason: …" ends the call as ``agent_hangup``."""

    async def goodbye(websocket: trio_websocket.WebSocketConnection) -> None:
        await ack_then(websocket)
        await websocket.send_message(line.custom("sid_test", {"agent_state": "closing"}))
        await trio.sleep(0.2)
        await websocket.aclose(1000, f"{line.CALL_ENDED_BY_AGENT}, reason: done")

    record = await run_line_call(goodbye, database_url)
    assert (record.status, record.end_reason) == ("completed", "agent_hangup")
    assert record.agent_events == ({"agent_state": "closing"},)
