"""A trio-websocket client that always closes its TCP connection.

Layer: adapter helper (used by the Cartesia client and the Twilio emulator).

Why it exists: trio-websocket 0.12's client, when the *server* closes first, waits for the TCP
close, sees EOF and stops reading without closing its stream; ``aclose()`` then returns early
because the WebSocket is already closed, and the socket leaks. Here Archer opens the TCP (or TLS)
stream itself, hands it to ``wrap_client_stream``, and closes it on the way out whatever happened.

Errors: a refused upgrade surfaces from trio-websocket's reader task, so it arrives inside an
exception group (``trio_websocket.ConnectionRejected``); unreachable hosts raise ``OSError``.
Callers map both with ``except*``.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

import trio
import trio_websocket

#: A close handshake gets this long before the connection is dropped. A healthy peer answers
#: within a round trip; nothing needs its answer, and waiting longer only delays the call's
#: record (the wait also ends early if the caller is cancelled meanwhile, taking our reader).
CLOSE_TIMEOUT: Final = 0.5
#: Long enough to write a close frame, when its reply cannot be waited for.
SEND_CLOSE_TIMEOUT: Final = 0.1


@asynccontextmanager
async def open_websocket_client(
    url: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    message_queue_size: int = 1,
    max_message_size: int = 1024 * 1024,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Connect to ``ws://`` or ``wss://`` ``url``; close the WebSocket and its socket on exit.

    Cancellation: the close frame is still sent (shielded, briefly); the socket is closed in
    every case.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or parts.hostname is None:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            parts.hostname, port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    else:
        stream = await trio.open_tcp_stream(parts.hostname, port)
    try:
        async with trio.open_nursery() as nursery:
            websocket = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                host_header,
                resource,
                extra_headers=extra_headers,
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
            )
            try:
                yield websocket
            finally:
                # When our caller is being cancelled, so is trio-websocket's reader task: the
                # peer's reply to our close frame could never be read. Send the frame (the peer
                # still sees a clean close) but do not wait out CLOSE_TIMEOUT for the reply.
                cancelled = trio.current_effective_deadline() == -math.inf
                with trio.move_on_after(
                    SEND_CLOSE_TIMEOUT if cancelled else CLOSE_TIMEOUT, shield=True
                ):
                    await websocket.aclose()
                # Ends trio-websocket's reader too, if the server's TCP close never came.
                await trio.aclose_forcefully(stream)
    finally:
        await trio.aclose_forcefully(stream)
