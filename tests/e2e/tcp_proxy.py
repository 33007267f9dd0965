"""A TCP proxy on loopback that a test can cut and restore: the network failing, for real.

Used to take PostgreSQL away from a running Archer (the database "down") and bring it back,
without touching the server itself.
"""

from __future__ import annotations

import attrs
import trio


@attrs.define
class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``cut()`` drops every connection."""

    target_port: int
    port: int = 0
    up: bool = True
    _connections: set[trio.CancelScope] = attrs.Factory(set)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def cut(self) -> None:
        """Refuse new connections and break the open ones (as a failed network would)."""
        self.up = False
        for scope in list(self._connections):
            scope.cancel()

    def restore(self) -> None:
        self.up = True

    async def _handle(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                if self.up:
                    await self._forward(client)
            finally:
                self._connections.discard(scope)
                await trio.aclose_forcefully(client)

    async def _forward(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, client, server, nursery.cancel_scope)
                nursery.start_soon(self._pipe, server, client, nursery.cancel_scope)
        finally:
            await trio.aclose_forcefully(server)

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()
