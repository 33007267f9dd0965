"""The dedicated media listener: Twilio's media streams on a port of their own (``MEDIA_PORT``).

Layer: web. The same call as the ``/ws/cartesia`` route (``archer.web.media.carry_stream``),
carried on ``archer.websocket_stream`` instead of hypercorn and quart-trio: the task that reads a
Twilio frame is the call's own Twilio reader, with no ASGI layer or channel hop in between.
``archer bench`` measured it at 0.78× the route's server CPU per call, with a p99 under a
third of the route's at 30 calls (README, "Performance"). Webhooks, health and metrics stay
on the HTTP port.

Rules:
- Only ``GET /ws/cartesia`` (a trailing slash allowed) is served (404 otherwise). The upgrade
  must arrive within ``UPGRADE_TIMEOUT``; without Twilio's signature it gets 403, before
  anything is accepted, exactly as on the route. While draining, streams are still accepted,
  as on the route: the webhook already refuses new calls, and a stream arriving now belongs
  to a call answered just before.
- The port is bound with ``SO_REUSEPORT``, so every ``--workers`` process binds it too and the
  kernel spreads connections among them; a call stays on the worker holding its socket.
- One connection's failure is logged and closes that connection only; the listener goes on.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import TYPE_CHECKING, Final

import structlog
import trio

from archer.twilio.stream import SocketTwilioStream
from archer.web.media import carry_stream
from archer.web.twilio_auth import stream_upgrade_signed
from archer.websocket_stream import read_upgrade

if TYPE_CHECKING:
    from archer.web.services import Services

log = structlog.get_logger(__name__)

MEDIA_PATH: Final = "/ws/cartesia"
#: A client that has not finished its upgrade request by then is dropped (slow-loris guard).
UPGRADE_TIMEOUT: Final = 10.0
_BACKLOG: Final = 1024


async def serve_media_listener(
    services: Services,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve media streams on ``host``:``port`` until cancelled; reports the bound port.

    Cancellation: stops listening; live calls are cancelled, and each is flushed (shielded)
    by ``carry_stream`` before its socket is closed.
    """
    listener = await _reuse_port_listener(host, port)
    bound = listener.socket.getsockname()[1]
    log.info("media_listener.started", port=bound)
    task_status.started(bound)
    await trio.serve_listeners(partial(_connection, services), [listener])


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind((host, port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _connection(services: Services, stream: trio.SocketStream) -> None:
    try:
        await _serve_one(services, stream)
    except Exception:
        # A bug in one call must not stop the listener (trio would cancel every call).
        log.exception("media_listener.connection_failed")
    finally:
        await trio.aclose_forcefully(stream)


async def _serve_one(services: Services, stream: trio.SocketStream) -> None:
    limits = services.settings.limits
    upgrade = None
    with trio.move_on_after(UPGRADE_TIMEOUT):
        upgrade = await read_upgrade(stream, max_message_bytes=limits.max_message_bytes)
    if upgrade is None:
        return  # not a WebSocket upgrade, or too slow: nothing to answer
    if upgrade.path.rstrip("/") != MEDIA_PATH:  # Twilio may add a trailing slash
        await upgrade.refuse(404)
        return
    query = upgrade.request.target.partition("?")[2]
    if not stream_upgrade_signed(services, upgrade.header, upgrade.path, query):
        await upgrade.refuse(403)
        return
    websocket = await upgrade.accept()
    try:
        await carry_stream(services, SocketTwilioStream(websocket))
    finally:
        # Closing Twilio's socket is what the route's return does; the TwiML's <Hangup/> then
        # ends the phone call.
        await websocket.aclose()
