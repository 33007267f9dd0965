"""``archer.twilio.stream``: the media-stream adapters' own rules, beyond the port's contract.

``tests/contract/test_twilio_stream.py`` holds ``SocketTwilioStream`` to what ``FakeTwilio``
does. Here: ``TwilioMediaStream`` (the route's adapter, on quart-trio's socket) over an in-memory
message socket — ``connected`` and ``start`` consumed by ``wait_for_start``, anything else first
refused, nothing sendable before ``start``, a second ``start`` refused — and
``SocketTwilioStream`` over loopback for what only a real socket shows: closed before ``start``,
and sends after the caller hung up doing nothing (the reader reports the end). Frames are
Twilio's documented JSON written by hand (../shared/reference/twilio-media-streams.md §3).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from archer.errors import TwilioProtocolError
from archer.twilio.frames import Dtmf
from archer.twilio.stream import SocketTwilioStream, TwilioMediaStream
from archer.websocket_stream import read_upgrade

TIMEOUT = 10
STREAM_SID = "MZ" + "a" * 32
CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM_SID,
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": STREAM_SID,
            "callSid": "CA" + "0" * 32,
            "tracks": ["inbound"],
            "customParameters": {"token": "t"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
)
DTMF = json.dumps(
    {
        "event": "dtmf",
        "sequenceNumber": "2",
        "streamSid": STREAM_SID,
        "dtmf": {"track": "inbound_track", "digit": "9"},
    }
)


@attrs.define
class MemorySocket:
    """quart-trio's ``websocket`` as the adapter uses it: ``receive`` and ``send`` of text."""

    inbound: list[str]
    sent: list[dict[str, Any]] = attrs.Factory(list)

    async def receive(self) -> str:
        await trio.lowlevel.checkpoint()
        return self.inbound.pop(0)

    async def send(self, message: str) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(json.loads(message))


async def test_wait_for_start_consumes_connected_and_sends_carry_the_stream_sid() -> None:
    socket = MemorySocket([CONNECTED, START, DTMF])
    stream = TwilioMediaStream(socket)
    start = await stream.wait_for_start()
    assert (start.stream_sid, start.custom_parameters) == (STREAM_SID, {"token": "t"})
    assert await stream.receive() == Dtmf("9")
    await stream.send_media("//79")
    await stream.send_mark("m1")
    await stream.send_clear()
    assert socket.sent == [
        {"event": "media", "streamSid": STREAM_SID, "media": {"payload": "//79"}},
        {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "m1"}},
        {"event": "clear", "streamSid": STREAM_SID},
    ]


async def test_a_frame_before_start_is_a_protocol_error() -> None:
    stream = TwilioMediaStream(MemorySocket([CONNECTED, DTMF]))
    with pytest.raises(TwilioProtocolError, match="dtmf before start"):
        await stream.wait_for_start()


async def test_nothing_can_be_sent_before_start() -> None:
    socket = MemorySocket([])
    with pytest.raises(RuntimeError, match="before Twilio's start"):
        await TwilioMediaStream(socket).send_media("//79")
    assert socket.sent == []


@pytest.mark.parametrize("late", [START, CONNECTED], ids=["start", "connected"])
async def test_a_second_start_or_connected_mid_stream_is_a_protocol_error(late: str) -> None:
    stream = TwilioMediaStream(MemorySocket([CONNECTED, START, late]))
    await stream.wait_for_start()
    with pytest.raises(TwilioProtocolError, match="mid-stream"):
        await stream.receive()


async def _serve_one(
    handler: Callable[[SocketTwilioStream], Awaitable[None]], nursery: trio.Nursery
) -> int:
    async def connection(socket: trio.SocketStream) -> None:
        try:
            upgrade = await read_upgrade(socket)
            assert upgrade is not None
            await handler(SocketTwilioStream(await upgrade.accept()))
        finally:
            await trio.aclose_forcefully(socket)

    listeners = await nursery.start(partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_a_socket_closed_before_start_is_a_protocol_error_naming_the_code() -> None:
    refusals: list[TwilioProtocolError] = []
    refused = trio.Event()

    async def handler(stream: SocketTwilioStream) -> None:
        with pytest.raises(TwilioProtocolError, match="closed before start") as error:
            await stream.wait_for_start()
        refusals.append(error.value)
        refused.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _serve_one(handler, nursery)
            async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                await ws.send_message(CONNECTED)
                await ws.aclose(1001, "going away")
            await refused.wait()
            nursery.cancel_scope.cancel("the test is over")
    assert "1001" in str(refusals[0])


async def test_sends_after_the_caller_hung_up_do_nothing_and_the_reader_reports_the_end() -> None:
    done = trio.Event()

    async def handler(stream: SocketTwilioStream) -> None:
        await stream.wait_for_start()
        with pytest.raises(trio.EndOfChannel):
            await stream.receive()
        await stream.send_media("//79")  # the socket is closed: nothing, and no error
        await stream.send_clear()
        done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _serve_one(handler, nursery)
            async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
                await ws.send_message(CONNECTED)
                await ws.send_message(START)
            await done.wait()
            nursery.cancel_scope.cancel("the test is over")
