"""``archer.websocket_stream`` against trio-websocket, an independent WebSocket, both ways.

The lean WebSocket carries the media listener and the bench's peers; these tests hold it to
what a real peer does: messages both ways, pings answered, close codes, the size limit and a
refused upgrade.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from archer.websocket_client import open_websocket_client
from archer.websocket_stream import (
    HandshakeRefused,
    WebSocketClosed,
    WebSocketStream,
    connect_websocket,
    read_upgrade,
)

TIMEOUT = 5


async def _trio_websocket_server(
    handler: Callable[[trio_websocket.WebSocketConnection], Awaitable[None]],
    nursery: trio.Nursery,
) -> int:
    async def accept(request: trio_websocket.WebSocketRequest) -> None:
        await handler(await request.accept())

    server = await nursery.start(
        partial(trio_websocket.serve_websocket, accept, "127.0.0.1", 0, ssl_context=None)
    )
    return int(server.port)


async def _lean_server(
    handler: Callable[[WebSocketStream], Awaitable[None]],
    nursery: trio.Nursery,
    *,
    refuse: int | None = None,
    max_message_bytes: int = 1024 * 1024,
) -> int:
    async def connection(stream: trio.SocketStream) -> None:
        upgrade = await read_upgrade(stream, max_message_bytes=max_message_bytes)
        assert upgrade is not None
        if refuse is not None:
            await upgrade.refuse(refuse)
            return
        websocket = await upgrade.accept()
        try:
            await handler(websocket)
        finally:
            await websocket.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_lean_client_talks_to_trio_websocket_and_answers_its_pings() -> None:
    async def echo_then_close(websocket: trio_websocket.WebSocketConnection) -> None:
        for _ in range(2):
            await websocket.send_message(await websocket.get_message())
        with trio.fail_after(TIMEOUT):
            await websocket.ping(b"are you there")  # returns once the pong arrives
        await websocket.aclose(4000, "done")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _trio_websocket_server(echo_then_close, nursery)
            async with connect_websocket("127.0.0.1", port, "/x") as websocket:
                await websocket.send("é" * 1000)
                await websocket.send(b"\x00\xff" * 3000)
                assert await websocket.receive() == "é" * 1000
                assert await websocket.receive() == b"\x00\xff" * 3000
                with pytest.raises(WebSocketClosed) as closed:
                    await websocket.receive()
                assert (closed.value.code, closed.value.reason) == (4000, "done")
                with pytest.raises(WebSocketClosed):
                    await websocket.send("after the close")
            nursery.cancel_scope.cancel()


async def test_trio_websocket_client_talks_to_the_lean_server() -> None:
    seen: list[str | bytes] = []
    server_done = trio.Event()

    async def echo_until_closed(websocket: WebSocketStream) -> None:
        try:
            while True:
                message = await websocket.receive()
                seen.append(message)
                await websocket.send(message)
        except WebSocketClosed as closed:
            seen.append(f"closed {closed.code}")
        server_done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _lean_server(echo_until_closed, nursery)
            async with open_websocket_client(f"ws://127.0.0.1:{port}/ws") as client:
                for message in ("one", b"two", "three" * 5000):
                    await client.send_message(message)
                    assert await client.get_message() == message
                await client.ping(b"ping")  # the lean server answers while it reads
            await server_done.wait()
            nursery.cancel_scope.cancel()
    assert seen == ["one", b"two", "three" * 5000, "closed 1000"]


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    received: list[str | bytes] = []

    async def read(websocket: WebSocketStream) -> None:
        received.append(await websocket.receive())
        with pytest.raises(WebSocketClosed) as closed:
            await websocket.receive()
        assert closed.value.code == 1009

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _lean_server(read, nursery, max_message_bytes=1000)
            async with open_websocket_client(f"ws://127.0.0.1:{port}/ws") as client:
                await client.send_message("x" * 1000)
                await client.send_message("x" * 1001)
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await client.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1009
            nursery.cancel_scope.cancel()
    assert received == ["x" * 1000]


async def test_a_refused_upgrade_is_an_http_status_to_both_clients() -> None:
    async def unused(websocket: WebSocketStream) -> None:
        raise AssertionError("refused upgrades never become sockets")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _lean_server(unused, nursery, refuse=403)
            with pytest.raises(HandshakeRefused) as refused:
                async with connect_websocket("127.0.0.1", port, "/ws"):
                    pass
            assert refused.value.status == 403
            with pytest.RaisesGroup(trio_websocket.ConnectionRejected, flatten_subgroups=True):
                async with open_websocket_client(f"ws://127.0.0.1:{port}/ws"):
                    pass
            nursery.cancel_scope.cancel()


async def test_a_ping_and_a_close_in_one_read_end_cleanly() -> None:
    """wsproto has moved past OPEN by the time the ping is handled: no pong, a clean close."""
    outcome: list[object] = []

    async def read(websocket: WebSocketStream) -> None:
        try:
            await websocket.receive()
        except WebSocketClosed as closed:
            outcome.append(closed.code)
        with pytest.raises(WebSocketClosed):
            await websocket.send("too late")
        outcome.append("send refused")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await _lean_server(read, nursery)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(client.send(Request(host="127.0.0.1", target="/ws")))
            while not any(isinstance(e, AcceptConnection) for e in client.events()):
                client.receive_data(await stream.receive_some(4096))
            await stream.send_all(client.send(Ping(b"x")) + client.send(CloseConnection(1000)))
            while len(outcome) < 2:
                client.receive_data(await stream.receive_some(4096) or None)
                list(client.events())
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert outcome == [1000, "send refused"]
