"""Contract: ``TwilioStream``, one suite against ``FakeTwilio`` and the real adapter.

Layer: contract tests (acceptance 3 of issue 18). ``run_call`` is tested against
``tests.fakes.twilio.FakeTwilio``; this suite proves the fake behaves like
``archer.twilio.stream.SocketTwilioStream`` (the media listener's adapter, on Archer's lean
WebSocket) for everything the call relies on: the caller's frames arrive in order as
``Media``/``Dtmf``/``Mark``/``Stop``, what the call sends reaches Twilio in order, a garbled
frame is one ``TwilioProtocolError`` and the stream goes on, and a socket gone without ``stop``
ends the stream with ``trio.EndOfChannel``.

The real adapter runs over loopback; the caller is a trio-websocket client speaking Twilio's
documented frames (../shared/reference/twilio-media-streams.md §3), written here by hand and
read back with ``json.loads``, never with Archer's builders. The route's adapter
(``TwilioMediaStream`` on quart-trio's socket) learns of a hang-up by cancellation instead, so
it is held to the rest in ``tests/twilio/test_stream.py`` and end to end in ``tests/e2e``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Protocol

import attrs
import pytest
import trio
import trio_websocket

from archer.call.ports import TwilioStream
from archer.errors import TwilioProtocolError
from archer.twilio.frames import Dtmf, Mark, Media, Stop
from archer.twilio.stream import SocketTwilioStream
from archer.websocket_stream import read_upgrade
from tests.fakes.twilio import FakeTwilio

TIMEOUT = 10
STREAM_SID = "MZ" + "0" * 31 + "1"
CALL_SID = "CA" + "0" * 31 + "1"


class TwilioPeer(Protocol):
    """Twilio's side of the stream, driven by the test."""

    async def speak(self, payload: str) -> None: ...
    async def press(self, digit: str) -> None: ...
    async def echo_mark(self, name: str) -> None: ...
    async def garble(self) -> None: ...
    async def stop(self) -> None: ...
    async def hang_up(self) -> None: ...
    async def received(self, count: int) -> list[tuple[str, str]]:
        """The first ``count`` frames the call sent, as ``FakeTwilio.outbound`` writes them."""
        ...


# --- the fake --------------------------------------------------------------------------------


@attrs.define
class FakePeer:
    twilio: FakeTwilio

    async def speak(self, payload: str) -> None:
        self.twilio.speak(payload)

    async def press(self, digit: str) -> None:
        self.twilio.press(digit)

    async def echo_mark(self, name: str) -> None:
        self.twilio.echo_mark(name)

    async def garble(self) -> None:
        self.twilio.garble()

    async def stop(self) -> None:
        self.twilio.stop()

    async def hang_up(self) -> None:
        self.twilio.hang_up()

    async def received(self, count: int) -> list[tuple[str, str]]:
        # The fake records a send before the send returns, as a socket has written it by then.
        await trio.lowlevel.checkpoint()
        return self.twilio.outbound[:count]


@asynccontextmanager
async def fake_pair() -> AsyncIterator[tuple[TwilioStream, TwilioPeer]]:
    twilio = FakeTwilio()
    await trio.lowlevel.checkpoint()
    yield twilio, FakePeer(twilio)


# --- the real adapter over loopback ----------------------------------------------------------


@attrs.define
class LoopbackCaller:
    """Twilio dialling Archer's media socket, in Twilio's JSON."""

    websocket: trio_websocket.WebSocketConnection
    #: Where a hang-up runs: trio-websocket's close waits for the answering close frame,
    #: which Archer's side sends only when the call reads the stream again.
    nursery: trio.Nursery
    sequence: int = 0
    chunk: int = 0

    async def _send(self, event: str, body: dict[str, Any]) -> None:
        self.sequence += 1
        await self.websocket.send_message(
            json.dumps(
                {"event": event, "sequenceNumber": str(self.sequence), "streamSid": STREAM_SID}
                | body
            )
        )

    async def start(self) -> None:
        await self.websocket.send_message(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await self._send(
            "start",
            {
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": STREAM_SID,
                    "callSid": CALL_SID,
                    "tracks": ["inbound"],
                    "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                }
            },
        )

    async def speak(self, payload: str) -> None:
        self.chunk += 1
        media = {
            "track": "inbound",
            "chunk": str(self.chunk),
            "timestamp": str(20 * self.chunk),
            "payload": payload,
        }
        await self._send("media", {"media": media})

    async def press(self, digit: str) -> None:
        await self._send("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})

    async def echo_mark(self, name: str) -> None:
        await self._send("mark", {"mark": {"name": name}})

    async def garble(self) -> None:
        await self.websocket.send_message("not JSON")

    async def stop(self) -> None:
        await self._send("stop", {"stop": {"accountSid": "AC" + "0" * 32, "callSid": CALL_SID}})

    async def hang_up(self) -> None:
        self.nursery.start_soon(self.websocket.aclose)
        await trio.lowlevel.checkpoint()

    async def received(self, count: int) -> list[tuple[str, str]]:
        frames = []
        for _ in range(count):
            frame = json.loads(await self.websocket.get_message())
            assert frame["streamSid"] == STREAM_SID
            match frame["event"]:
                case "media":
                    frames.append(("media", frame["media"]["payload"]))
                case "mark":
                    frames.append(("mark", frame["mark"]["name"]))
                case "clear":
                    frames.append(("clear", ""))
                case _:
                    raise AssertionError(f"unexpected frame from Archer: {frame}")
        return frames


@asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[TwilioStream, TwilioPeer]]:
    streams: trio.MemorySendChannel[SocketTwilioStream]
    streams, accepted = trio.open_memory_channel[SocketTwilioStream](1)  # one call per test
    test_over = trio.Event()

    async def connection(socket: trio.SocketStream) -> None:
        try:
            upgrade = await read_upgrade(socket)
            assert upgrade is not None
            stream = SocketTwilioStream(await upgrade.accept())
            start = await stream.wait_for_start()
            assert (start.stream_sid, start.call_sid) == (STREAM_SID, CALL_SID)
            await streams.send(stream)
            await test_over.wait()  # the test owns the stream until then
        finally:
            await trio.aclose_forcefully(socket)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False) as ws:
            caller = LoopbackCaller(ws, nursery)
            await caller.start()
            yield await accepted.receive(), caller
            test_over.set()
        nursery.cancel_scope.cancel("the contract test is over")


PAIRS = {"fake": fake_pair, "socket": socket_pair}


@pytest.fixture(params=sorted(PAIRS))
def open_pair(request: pytest.FixtureRequest) -> Callable[[], AbstractAsyncContextManager[Any]]:
    return PAIRS[request.param]


# --- the contract ------------------------------------------------------------------------------


async def test_the_callers_frames_arrive_in_order(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[TwilioStream, TwilioPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await peer.speak("f39/fw==")
            await peer.press("7")
            await peer.echo_mark("turn-1")
            await peer.speak("AAAA")
            await peer.stop()
            first = await stream.receive()
            assert isinstance(first, Media)
            assert first.payload == "f39/fw=="
            assert await stream.receive() == Dtmf("7")
            assert await stream.receive() == Mark("turn-1")
            second = await stream.receive()
            assert isinstance(second, Media)
            assert second.payload == "AAAA"
            assert (second.chunk, second.timestamp) > (first.chunk, first.timestamp)
            assert isinstance(await stream.receive(), Stop)


async def test_what_the_call_sends_reaches_twilio_in_order(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[TwilioStream, TwilioPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await stream.send_media("//79")
            await stream.send_mark("turn-1")
            await stream.send_clear()
            await stream.send_media("AAAA")
            assert await peer.received(4) == [
                ("media", "//79"),
                ("mark", "turn-1"),
                ("clear", ""),
                ("media", "AAAA"),
            ]


async def test_a_garbled_frame_is_one_protocol_error_and_the_stream_goes_on(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[TwilioStream, TwilioPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await peer.garble()
            await peer.press("1")
            with pytest.raises(TwilioProtocolError):
                await stream.receive()
            assert await stream.receive() == Dtmf("1")


async def test_a_socket_gone_without_stop_ends_the_stream(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[TwilioStream, TwilioPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await peer.press("1")
            await peer.hang_up()
            assert await stream.receive() == Dtmf("1")
            with pytest.raises(trio.EndOfChannel):
                await stream.receive()
