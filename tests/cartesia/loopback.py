"""A scripted Cartesia agent on a loopback trio-websocket server, for the client adapters' tests.

The test writes the agent as one coroutine that gets the accepted connection (after the client's
first message) and speaks the protocol's JSON by hand, from Cartesia's documents — never with
Archer's builders. What the agent saw (path, headers, first message) is kept for asserts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
import trio_websocket

Script = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


@attrs.define
class SeenByAgent:
    path: str = ""
    headers: dict[str, str] = attrs.Factory(dict)
    #: The client's first message (``session_create`` or ``start``), parsed.
    first: dict[str, Any] = attrs.Factory(dict)


@asynccontextmanager
async def serve_agent(
    script: Script, *, reject_status: int | None = None
) -> AsyncIterator[tuple[str, SeenByAgent]]:
    """Yield ``ws://127.0.0.1:<port>`` of an agent running ``script`` per connection."""
    seen = SeenByAgent()

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        seen.path = request.path
        seen.headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        if reject_status is not None:
            await request.reject(reject_status)
            return
        websocket = await request.accept()
        # Both protocols' clients speak first (``session_create``, ``start``).
        seen.first = json.loads(await websocket.get_message())
        await script(websocket)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handle, "127.0.0.1", 0, None)
        )
        yield f"ws://127.0.0.1:{server.port}", seen
        nursery.cancel_scope.cancel("the test is over")
