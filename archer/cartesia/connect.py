"""Opening an agent's WebSocket, for either Cartesia protocol: one deadline, one error mapping.

Layer: adapter helper. ``open_agent_socket`` connects, runs the protocol's handshake
(``session_create``/``session_ready`` or ``start``/``ack``) under a single deadline, lifts the
deadline once the agent is ready, and maps every way of failing before then to an
``AgentUnavailableError`` whose ``end_reason`` names it. After the handshake, errors pass through
untouched: they belong to the call.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import trio
import trio_websocket

from archer.errors import AgentUnavailableError
from archer.websocket_client import open_websocket_client

#: Messages trio-websocket may hold for us; agent audio is paced, so a few are plenty.
MESSAGE_QUEUE_SIZE: Final = 8

_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)


@asynccontextmanager
async def open_agent_socket(
    url: str,
    *,
    api_key: str,
    version: str,
    ready_timeout: float,
    max_message_bytes: int,
    handshake: Callable[[trio_websocket.WebSocketConnection], Awaitable[_T]],
    ready_event: str,
) -> AsyncIterator[_T]:
    """Connect to ``url`` and yield what ``handshake`` returns once the agent is ready.

    ``ready_event`` names the message that means ready (``session_ready``, ``ack``) in errors.

    Raises:
        AgentUnavailableError: unreachable, upgrade refused, or not ready within
            ``ready_timeout`` of connecting (the error's ``end_reason`` says which).

    Cancellation: the socket is closed (see ``archer.websocket_client``).
    """
    ready = False
    try:
        # One deadline for TCP, the upgrade and the protocol's handshake; lifted once ready.
        with trio.move_on_after(ready_timeout) as deadline:
            async with open_websocket_client(
                url,
                extra_headers=[
                    (b"X-API-Key", api_key.encode()),
                    (b"Cartesia-Version", version.encode()),
                ],
                message_queue_size=MESSAGE_QUEUE_SIZE,
                max_message_size=max_message_bytes,
            ) as websocket:
                agent = await handshake(websocket)
                ready = True
                deadline.deadline = math.inf
                yield agent
    except* trio_websocket.ConnectionRejected as group:
        if ready:
            raise
        status = _leaf(group).status_code
        raise AgentUnavailableError(
            f"agent refused the connection: HTTP {status}", end_reason="agent_rejected"
        ) from None
    except* (OSError, trio_websocket.HandshakeError, trio.BrokenResourceError) as group:
        if ready:
            raise
        raise AgentUnavailableError(
            f"agent unreachable: {_leaf(group)!s}", end_reason="agent_unreachable"
        ) from None
    if deadline.cancelled_caught:
        raise AgentUnavailableError(
            f"agent not ready within {ready_timeout:g} s (no WebSocket or no {ready_event})",
            end_reason="agent_handshake_timeout",
        )


def _leaf(group: BaseExceptionGroup[_E]) -> _E:
    """The first exception of a (possibly nested) group."""
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first
