"""Issue 19: a call never outlives its caller on the default route (no ``MEDIA_PORT``).

Three ways Twilio's side can go, each on the quart-trio route with real hypercorn, real
websockets and a real database (SQLite; the database is not what is under test):

- a 5 MB frame after ``start``: hypercorn closes the socket with 1009 (``MAX_MESSAGE_BYTES``)
  but does not tell the route (hypercorn 0.18 sends the close and drops the rest; the ASGI app
  hears ``websocket.disconnect`` only once the TCP connection ends). A peer that answers the
  close and hangs up ends the call at once; one that holds its socket open is ended by the
  media timeout;
- the TCP connection dropped without ``stop`` (cut by a proxy, as a failing network would);
- a socket that stays open and sends nothing.

Each call ends within ``TWILIO_MEDIA_TIMEOUT`` + 2 s, the agent's socket is closed, and the
record says why and how long the caller was really there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from archer.db.store import StoredCall
from archer.emulators.twilio.frames import CallerFrames
from archer.settings import CallLimits
from archer.websocket_stream import connect_websocket
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer, TwilioCaller
from tests.e2e.tcp_proxy import TcpProxy
from tests.e2e.test_call import System, running_system
from tests.e2e.test_hostile_stream import assert_still_serving, speech
from tests.helpers import audio

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

MEDIA_TIMEOUT = 3.0
LIMITS = CallLimits(twilio_media_timeout=MEDIA_TIMEOUT, agent_ready_timeout=2.0)
#: Slack on the duration: the watchdog looks every 250 ms, and loopback adds a little.
DURATION_SLACK = 0.75


async def listen(peer: AgentPeer) -> None:
    await peer.accept_session()


@attrs.define
class Timeline:
    """When the call was connected and when its caller went (loop clock, seconds)."""

    connected: float = 0.0
    gone: float = 0.0


@asynccontextmanager
async def call_under_way(
    system: System, caller: TwilioCaller, nursery: trio.Nursery, timeline: Timeline
) -> AsyncIterator[AgentPeer]:
    """A call bridged to the agent with three frames of speech delivered."""
    await caller.dial()
    timeline.connected = trio.current_time()
    await caller.connect(nursery)
    peer = await system.peer()
    for tag in range(1, 4):
        await caller.speak(audio(tag))
    await peer.wait_for(lambda events: len(speech(peer)) >= 3)
    yield peer


async def ended_in_time(system: System, peer: AgentPeer, timeline: Timeline) -> StoredCall:
    """The finished record, checked to have come within the media timeout + 2 s of the fault,
    with the agent's socket closed."""
    stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
    took = trio.current_time() - timeline.gone
    assert took <= MEDIA_TIMEOUT + 2.0, f"the call outlived its caller by {took:.2f} s"
    with trio.fail_after(STEP_TIMEOUT):
        await peer.closed.wait()
    record = stored.record
    assert record.duration_ms is not None
    there = timeline.gone - timeline.connected
    assert abs(record.duration_ms / 1000 - there) <= DURATION_SLACK, (record.duration_ms, there)
    assert record.frames_in == 3
    assert speech(peer) == [audio(tag) for tag in range(1, 4)]
    return stored


async def test_a_5mb_frame_after_start_ends_the_call(database_url: str) -> None:
    """Hypercorn refuses the 5 MB frame (1009) without telling the route; the call still ends,
    ``twilio_lost`` or ``twilio_disconnected``, never ``agent_hangup`` an hour later."""
    async with running_system(database_url, listen, limits=LIMITS) as system:
        caller, timeline = system.caller, Timeline()
        async with trio.open_nursery() as nursery:
            async with call_under_way(system, caller, nursery, timeline) as peer:
                huge = audio(4, size=5 * 1024 * 1024 // 4 * 3)  # 5 MB of base64 in the JSON
                timeline.gone = trio.current_time()
                await caller.speak(huge)
                stored = await ended_in_time(system, peer, timeline)
            with trio.fail_after(STEP_TIMEOUT):
                await caller.closed.wait()
            nursery.cancel_scope.cancel()
        assert caller.websocket is not None
        assert caller.websocket.closed is not None
        assert caller.websocket.closed.code == 1009
        assert stored.record.end_reason in ("twilio_lost", "twilio_disconnected")
        await assert_still_serving(system)


async def test_a_connection_dropped_without_stop_ends_the_call(database_url: str) -> None:
    """The TCP connection cut under the stream: ``completed`` / ``twilio_disconnected``."""
    async with (
        running_system(database_url, listen, limits=LIMITS) as system,
        trio.open_nursery() as nursery,
    ):
        port = int(system.caller.archer_url.rsplit(":", 1)[1])
        proxy = TcpProxy(target_port=port)
        await nursery.start(proxy.run)
        caller = attrs.evolve(system.caller, media_url=f"http://127.0.0.1:{proxy.port}")
        timeline = Timeline()
        async with call_under_way(system, caller, nursery, timeline) as peer:
            timeline.gone = trio.current_time()
            proxy.cut()
            stored = await ended_in_time(system, peer, timeline)
        nursery.cancel_scope.cancel()
    assert (stored.record.status, stored.record.end_reason) == ("completed", "twilio_disconnected")


async def test_a_stream_that_sends_nothing_ends_as_twilio_lost(database_url: str) -> None:
    """The socket stays open and silent: ``failed`` / ``twilio_lost`` after the media timeout,
    with the duration up to the last frame, not up to when the silence was noticed."""
    async with running_system(database_url, listen, limits=LIMITS) as system:
        caller, timeline = system.caller, Timeline()
        async with trio.open_nursery() as nursery:
            async with call_under_way(system, caller, nursery, timeline) as peer:
                timeline.gone = trio.current_time()
                stored = await ended_in_time(system, peer, timeline)
            with trio.fail_after(STEP_TIMEOUT):
                await caller.closed.wait()  # Archer closed Twilio's socket (<Hangup/> follows)
            nursery.cancel_scope.cancel()
    record = stored.record
    assert (record.status, record.end_reason) == ("failed", "twilio_lost")
    assert record.error == f"no media from Twilio for {MEDIA_TIMEOUT:g} s"


async def test_a_5mb_frame_from_a_peer_that_holds_its_socket_ends_as_twilio_lost(
    database_url: str,
) -> None:
    """The worst case of the 5 MB frame: the peer neither answers hypercorn's 1009 close nor
    closes its connection, so the route is never told; the media timeout still ends the call."""
    async with running_system(database_url, listen, limits=LIMITS) as system:
        caller, timeline = system.caller, Timeline()
        await caller.dial()
        host, port = caller.archer_url.removeprefix("http://").rsplit(":", 1)
        signature = caller.signer.sign(caller.stream_url, {})
        timeline.connected = trio.current_time()
        async with connect_websocket(
            host, int(port), "/ws/cartesia", headers=[("X-Twilio-Signature", signature)]
        ) as websocket:
            frames = twilio_frames(caller)
            for frame in [frames.connected(), frames.start(caller.parameters)]:
                await websocket.send(frame)
            for n in range(1, 4):
                await websocket.send(frames.media(audio(n)))
            peer = await system.peer()
            await peer.wait_for(lambda events: len(speech(peer)) >= 3)
            timeline.gone = trio.current_time()
            await websocket.send(frames.media(audio(4, size=3_932_160)))
            # Never read again: hypercorn's close frame stays unanswered, the socket open.
            stored = await ended_in_time(system, peer, timeline)
    assert (stored.record.status, stored.record.end_reason) == ("failed", "twilio_lost")


def twilio_frames(caller: TwilioCaller) -> CallerFrames:
    """The caller's stream, numbered as Twilio numbers it (``connected``, ``start``, media)."""
    return CallerFrames(caller.stream_sid, caller.account_sid, caller.call_sid, first_media_ms=20)
