"""A WebSocket on one trio stream, read by the task that wants the next message.

Layer: adapter helper (wsproto, the sans-I/O WebSocket engine that trio-websocket and hypercorn
use, driven directly on a trio stream).

Why it exists: trio-websocket and quart-trio each give every connection a reader task and a
memory channel, so a message costs a task hop (≈ 13–15 µs here) before anyone sees it. Here the
task calling ``receive`` reads the socket itself and feeds wsproto, and a send is one write, so a
message costs what parsing it costs. ``archer bench`` drives its emulated callers and agents on
this, which keeps the load generator much cheaper than the server it measures.

Rules:
- One task receives at a time; any number of tasks may send (a lock orders the writes, and a
  ping arriving in ``receive`` is answered under the same lock).
- A peer's close frame is answered, then ``receive`` raises ``WebSocketClosed`` with its code;
  a socket that drops without one raises ``WebSocketClosed`` with code 1006.
- A message larger than ``max_message_bytes`` closes the socket with 1009 (too big).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

#: Bytes asked of the socket per read: a few dozen media frames.
READ_SIZE: Final = 65536
#: How long ``aclose`` waits for the peer's answering close frame.
CLOSE_TIMEOUT: Final = 0.5
#: A close code for a socket that ended without a close frame (RFC 6455 §7.1.5).
ABNORMAL_CLOSURE: Final = 1006
MESSAGE_TOO_BIG: Final = 1009


class WebSocketClosed(Exception):
    """The connection is closed: by the peer's close frame (its code), or dropped (1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class HandshakeRefused(Exception):
    """The server answered the upgrade with an HTTP status instead of accepting it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"WebSocket upgrade refused with HTTP {status}")
        self.status = status


class WebSocketStream:
    """One open WebSocket (after the handshake) on ``stream``."""

    def __init__(
        self,
        stream: trio.SocketStream,
        connection: WSConnection,
        *,
        max_message_bytes: int,
        pending: list[Event] | None = None,
    ) -> None:
        self._stream = stream
        self._connection = connection
        self._max_message_bytes = max_message_bytes
        self._send_lock = trio.StrictFIFOLock()
        self._ready: deque[str | bytes] = deque()
        self._parts: list[str] | list[bytes] = []
        self._part_bytes = 0
        self._closed: WebSocketClosed | None = None
        # Events wsproto produced in the same read as the handshake.
        self._pending = pending or []

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def receive(self) -> str | bytes:
        """The next whole message (``str`` for text, ``bytes`` for binary).

        Raises:
            WebSocketClosed: the peer closed (its code) or the socket dropped (1006).
        """
        while not self._ready:
            if self._closed is not None:
                raise self._closed
            if self._pending:
                events, self._pending = self._pending, []
                await self._handle(events)
                continue
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._closed = WebSocketClosed(ABNORMAL_CLOSURE, "connection dropped")
                continue
            self._connection.receive_data(data)
            await self._handle(list(self._connection.events()))
        return self._ready.popleft()

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message.

        Raises:
            WebSocketClosed: the connection is closed (nothing was sent).
        """
        if self._closed is not None:
            raise self._closed
        if self._connection.state is not ConnectionState.OPEN:
            # The peer's close frame is read but not yet handled: nothing may be sent now.
            raise WebSocketClosed(ABNORMAL_CLOSURE, "closing")
        if isinstance(message, str):
            data = self._connection.send(TextMessage(data=message))
        else:
            data = self._connection.send(BytesMessage(data=message))
        await self._write(data)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, wait briefly for the answer, and close the socket.

        Cancellation: the socket is closed in every case.
        """
        try:
            if self._closed is None:
                self._closed = WebSocketClosed(code, reason)
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await self._write(self._connection.send(CloseConnection(code, reason)))
                    while True:  # until the peer's close frame, or EOF
                        data = await self._stream.receive_some(READ_SIZE)
                        if not data:
                            break
                        self._connection.receive_data(data)
                        if any(isinstance(e, CloseConnection) for e in self._connection.events()):
                            break
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass  # the peer went first: nothing left to say
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, TextMessage | BytesMessage):
                if not self._add_part(event.data, finished=event.message_finished):
                    await self._close_for(MESSAGE_TOO_BIG, "message too big")
                    return
            elif isinstance(event, Ping):
                # wsproto reads a whole batch before we see it: a close frame later in this
                # batch has already moved it past OPEN, and a pong is then moot.
                if self._connection.state is ConnectionState.OPEN:
                    await self._write(self._connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed = WebSocketClosed(event.code, event.reason or "")
                with contextlib.suppress(LocalProtocolError):  # we had already sent ours
                    await self._write(self._connection.send(event.response()))
                await trio.aclose_forcefully(self._stream)
                return

    async def _close_for(self, code: int, reason: str) -> None:
        """Close from our side because of what the peer sent; ``receive`` raises ``code``."""
        self._closed = WebSocketClosed(code, reason)
        with contextlib.suppress(WebSocketClosed, LocalProtocolError):
            await self._write(self._connection.send(CloseConnection(code, reason)))
        await trio.aclose_forcefully(self._stream)

    def _add_part(self, data: str | bytes | bytearray, *, finished: bool) -> bool:
        """Keep a message (part); False if the message has grown past the limit."""
        if isinstance(data, bytearray):
            data = bytes(data)
        self._part_bytes += len(data)
        if self._part_bytes > self._max_message_bytes:
            self._parts, self._part_bytes = [], 0
            return False
        if finished and not self._parts:
            self._ready.append(data)  # the usual case: a whole message in one event
        else:
            self._parts.append(data)  # type: ignore[arg-type]  # parts of one message share a type
            if finished:
                parts, self._parts = self._parts, []
                joined: str | bytes = "".join(parts) if isinstance(data, str) else b"".join(parts)  # type: ignore[arg-type]
                self._ready.append(joined)
        if finished:
            self._part_bytes = 0
        return True

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._closed = self._closed or WebSocketClosed(ABNORMAL_CLOSURE, "write failed")
                raise self._closed from None


@asynccontextmanager
async def connect_websocket(
    host: str,
    port: int,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    max_message_bytes: int = 1024 * 1024,
) -> AsyncIterator[WebSocketStream]:
    """Open a client WebSocket to ``ws://host:port/target``; closed on exit.

    Raises:
        OSError: the server could not be reached.
        HandshakeRefused: the server answered with an HTTP status.
        WebSocketClosed: the connection dropped during the handshake.
    """
    stream = await trio.open_tcp_stream(host, port)
    connection = WSConnection(ConnectionType.CLIENT)
    try:
        host_header = host if port == 80 else f"{host}:{port}"
        await stream.send_all(
            connection.send(
                Request(
                    host=host_header,
                    target=target,
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers or []],
                )
            )
        )
        pending: list[Event] = []
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise WebSocketClosed(ABNORMAL_CLOSURE, "dropped during the handshake")
            connection.receive_data(data)
            events = list(connection.events())
            accepted = next((e for e in events if isinstance(e, AcceptConnection)), None)
            refused = next((e for e in events if isinstance(e, RejectConnection)), None)
            if refused is not None:
                raise HandshakeRefused(refused.status_code)
            if accepted is not None:
                pending = events[events.index(accepted) + 1 :]
                break
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    websocket = WebSocketStream(
        stream, connection, max_message_bytes=max_message_bytes, pending=pending
    )
    try:
        yield websocket
    finally:
        await websocket.aclose()


@attrs.define
class Upgrade:
    """A client's WebSocket upgrade request, not yet answered: ``accept`` it or ``refuse`` it."""

    request: Request
    _stream: trio.SocketStream
    _connection: WSConnection
    _pending: list[Event]
    _max_message_bytes: int

    @property
    def path(self) -> str:
        return self.request.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), decoded as Latin-1."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.request.extra_headers:
            if key.lower() == wanted:
                return bytes(value).decode("latin-1")
        return None

    async def accept(self) -> WebSocketStream:
        await self._stream.send_all(self._connection.send(AcceptConnection()))
        return WebSocketStream(
            self._stream,
            self._connection,
            max_message_bytes=self._max_message_bytes,
            pending=self._pending,
        )

    async def refuse(self, status: int) -> None:
        """Answer with an HTTP ``status`` (no body) and close the connection."""
        try:
            await self._stream.send_all(
                self._connection.send(RejectConnection(status_code=status, has_body=False))
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass  # the client is gone already
        finally:
            await trio.aclose_forcefully(self._stream)


async def read_upgrade(
    stream: trio.SocketStream, *, max_message_bytes: int = 1024 * 1024
) -> Upgrade | None:
    """Read a client's upgrade request on ``stream``.

    Returns None, with the stream closed, when the peer sent something that is not a WebSocket
    upgrade or went away first (callers bound the wait).
    """
    connection = WSConnection(ConnectionType.SERVER)
    events: list[Event] = []
    while not any(isinstance(event, Request) for event in events):
        data = await stream.receive_some(READ_SIZE)
        try:
            connection.receive_data(data or None)  # None tells wsproto the peer closed
            events += connection.events()
        except RemoteProtocolError:
            data = b""
        if not data:
            await trio.aclose_forcefully(stream)
            return None
    request = next(event for event in events if isinstance(event, Request))
    pending = events[events.index(request) + 1 :]
    return Upgrade(request, stream, connection, pending, max_message_bytes)


async def accept_websocket(
    stream: trio.SocketStream, *, max_message_bytes: int = 1024 * 1024
) -> tuple[Request, WebSocketStream] | None:
    """Read a client's upgrade request on ``stream`` and accept whatever it asks for."""
    upgrade = await read_upgrade(stream, max_message_bytes=max_message_bytes)
    if upgrade is None:
        return None
    return upgrade.request, await upgrade.accept()
