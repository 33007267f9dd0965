"""Issue 19: a replayed, signed voice webhook never re-arms a stream.

A captured webhook replays perfectly (Twilio signs only the URL and the form), so Archer arms a
call once: the replay is answered ``<Hangup/>`` with no stream and no token, before the call
streams, while it streams and after it ended, and the agent never sees a second session. The
legitimate stream still works when the replay came first. Real hypercorn, real websockets, a
real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import attrs
import trio

from archer.emulators.http import HttpResponse
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer, TwilioCaller
from tests.e2e.test_call import System, running_system
from tests.helpers import audio


async def listen(peer: AgentPeer) -> None:
    await peer.accept_session()


def replayer(caller: TwilioCaller, n: int) -> TwilioCaller:
    """Someone who captured the call's signed webhook and its TwiML, on a socket of their own."""
    return attrs.evolve(
        caller,
        stream_sid=f"MZ{n:032d}",
        outbound=[],
        invalid=[],
        websocket=None,
        rejected_status=None,
        closed=trio.Event(),
    )


def refused_without_a_stream(answer: HttpResponse) -> None:
    assert answer.status == 200
    assert "<Hangup" in answer.text
    assert "<Stream" not in answer.text
    assert "token" not in answer.text


async def replay_webhook(caller: TwilioCaller) -> HttpResponse:
    """Post the very same signed webhook again (the captured request, byte for byte)."""
    return await caller.post("/twilio/voice", caller.webhook_fields())


async def try_stream(system: System, impostor: TwilioCaller, nursery: trio.Nursery) -> None:
    """Dial the stream with what the replayer holds (the captured TwiML's parameters)."""
    await impostor.connect(nursery)
    with trio.fail_after(STEP_TIMEOUT):
        await impostor.closed.wait()  # Archer closes it after `start`: the token is no good
    assert impostor.media() == []


async def carry_a_short_call(system: System, nursery: trio.Nursery) -> AgentPeer:
    caller = system.caller
    await caller.connect(nursery)
    peer = await system.peer()
    for tag in range(1, 4):
        await caller.speak(audio(tag))
    await peer.wait_for(lambda events: len(peer.received) >= 4)
    return peer


async def test_a_replay_before_the_stream_gets_nothing_and_the_call_still_works(
    database_url: str,
) -> None:
    """Replayed before Twilio streams: ``<Hangup/>``; the legitimate stream then works."""
    async with running_system(database_url, listen) as system:
        caller = system.caller
        assert "<Stream" in (await caller.dial()).text
        refused_without_a_stream(await replay_webhook(caller))
        async with trio.open_nursery() as nursery:
            await carry_a_short_call(system, nursery)
            await caller.stop()
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert stored.record.frames_in == 3
    assert len(system.agent.peers) == 1


async def test_a_replay_during_the_stream_opens_no_second_session(database_url: str) -> None:
    """Replayed while the call streams: ``<Hangup/>``, and the captured token is spent."""
    async with running_system(database_url, listen) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await carry_a_short_call(system, nursery)
            refused_without_a_stream(await replay_webhook(caller))
            await try_stream(system, replayer(caller, 2), nursery)
            assert caller.websocket is not None
            assert caller.websocket.closed is None  # the real call is untouched
            await caller.stop()
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    assert stored.record.end_reason == "caller_hangup"
    assert stored.record.stream_sid == caller.stream_sid
    assert len(system.agent.peers) == 1


async def test_a_replay_after_the_call_opens_no_second_session(database_url: str) -> None:
    """Replayed after the call ended: ``<Hangup/>``; no stream reaches the agent again."""
    async with running_system(database_url, listen) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await carry_a_short_call(system, nursery)
            await caller.stop()
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            refused_without_a_stream(await replay_webhook(caller))
            await try_stream(system, replayer(caller, 3), nursery)
            nursery.cancel_scope.cancel()
        stored = await system.store.load_call(caller.call_sid)
    assert stored is not None
    assert (stored.record.end_reason, stored.record.stream_sid) == (
        "caller_hangup",
        caller.stream_sid,
    )
    assert len(system.agent.peers) == 1
