"""Every line a call produces carries its ``call_sid`` and ``stream_sid``, DB threads included."""

from __future__ import annotations

import structlog
import trio

from archer.cartesia import managed
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.test_call import running_system
from tests.helpers import audio

#: Lines that only exist inside a call: from the route, the pumps, the tools and a DB thread.
CALL_EVENTS = {"call.started", "agent.ready", "tool.finished", "db.call_saved", "call.finished"}


async def greet_and_use_a_tool(peer: AgentPeer) -> None:
    await peer.accept_session()
    await peer.send(managed.audio_output(audio(1)))
    await peer.send(managed.client_tool_call("call_log_1", "echo", {}, expects_response=True))


async def test_call_lines_carry_the_call_context(sqlite_url: str) -> None:
    """From the webhook to the flush in a worker thread, the call's ids are on every line."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as entries:
        async with running_system(sqlite_url, greet_and_use_a_tool) as system:
            caller = system.caller
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                peer = await system.peer()
                await peer.wait_for(lambda events: bool(peer.of(managed.ClientToolResult)))
                await caller.stop()
                await system.wait_for_record(lambda s: s.record.end_reason is not None)
                with trio.fail_after(STEP_TIMEOUT):
                    await peer.closed.wait()
                nursery.cancel_scope.cancel()
    seen = {entry["event"] for entry in entries}
    assert seen >= CALL_EVENTS
    for entry in entries:
        if entry["event"] in CALL_EVENTS:
            assert entry.get("call_sid") == caller.call_sid, entry
            assert entry.get("stream_sid") == caller.stream_sid, entry
    [incoming] = [entry for entry in entries if entry["event"] == "call.incoming"]
    assert incoming["call_sid"] == caller.call_sid
    # The caller's number is masked wherever it is logged.
    assert all(caller.from_number not in str(entry) for entry in entries)
