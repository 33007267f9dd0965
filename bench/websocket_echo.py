"""What does the WebSocket stack cost per message? Three servers, one echo load, server CPU.

Run: /work/venv/bin/python bench/websocket_echo.py  (about a minute; prints a table)

The media leg's choice of server, priced alone. Each server runs in its own process and echoes
every message back; this process drives the same load at each: ``CONNECTIONS`` sockets, each
sending a 300-byte text message (a Twilio media frame's size) every 20 ms for ``SECONDS`` seconds,
over the lean client of ``archer.websocket_stream``. The figure is the server's CPU time (from
``/proc``) per message echoed, so per message received plus the one sent back:

- ``quart-trio``: a quart-trio ``@websocket`` route on hypercorn (Archer's ``/ws/cartesia``);
- ``trio-websocket``: ``trio_websocket.serve_websocket`` (a reader task and a channel per socket);
- ``wsproto``: ``archer.websocket_stream`` (wsproto driven by the task that reads; what Archer's
  media listener runs).

Linux only (``/proc``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from functools import partial
from typing import Final

import trio

from archer.bench import procstat
from archer.bench.run import free_port
from archer.websocket_stream import WebSocketClosed, connect_websocket

CONNECTIONS: Final = 30
SECONDS: Final = 10.0
MESSAGE: Final = "x" * 300
SERVERS: Final = ("quart-trio", "trio-websocket", "wsproto")


def serve(kind: str, port: int) -> None:
    """Run one echo server until killed (the child process's entry point)."""
    if kind == "quart-trio":
        from hypercorn.config import Config
        from hypercorn.trio import serve as hypercorn_serve
        from quart import websocket
        from quart_trio import QuartTrio

        app = QuartTrio("echo")

        @app.websocket("/echo")
        async def echo() -> None:
            while True:
                await websocket.send(await websocket.receive())

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = config.errorlog = None
        trio.run(hypercorn_serve, app, config)
    elif kind == "trio-websocket":
        import trio_websocket

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            websocket = await request.accept()
            try:
                while True:
                    await websocket.send_message(await websocket.get_message())
            except trio_websocket.ConnectionClosed:
                pass

        trio.run(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", port, ssl_context=None)
        )
    else:
        from archer.websocket_stream import accept_websocket

        async def connection(stream: trio.SocketStream) -> None:
            accepted = await accept_websocket(stream)
            if accepted is None:
                return
            _, websocket = accepted
            try:
                while True:
                    await websocket.send(await websocket.receive())
            except WebSocketClosed:
                pass

        trio.run(partial(trio.serve_tcp, connection, port, host="127.0.0.1"))


async def drive(port: int, pid: int) -> tuple[float, int]:
    """Server CPU seconds and messages echoed while the load ran."""
    echoed = 0

    async def one_socket(done: trio.Event) -> None:
        nonlocal echoed
        async with connect_websocket("127.0.0.1", port, "/echo") as websocket:
            next_at = trio.current_time()
            while not done.is_set():
                await websocket.send(MESSAGE)
                await websocket.receive()
                echoed += 1
                next_at += 0.02
                await trio.sleep_until(next_at)

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTIONS):
            nursery.start_soon(one_socket, done)
        await trio.sleep(1.0)  # every socket open and echoing
        cpu_before, echoed_before = procstat.cpu_seconds([pid]), echoed
        await trio.sleep(SECONDS)
        cpu = procstat.cpu_seconds([pid]) - cpu_before
        count = echoed - echoed_before
        done.set()
    return cpu, count


def _wait_until_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    if len(sys.argv) == 3:
        serve(sys.argv[1], int(sys.argv[2]))
        return
    if not procstat.available():
        sys.exit("needs Linux /proc")
    print(f"Python {sys.version.split()[0]}; {CONNECTIONS} sockets x 50 messages/s, {SECONDS:g} s")
    for kind in SERVERS:
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, kind, str(port)])
        try:
            _wait_until_listening(port)
            cpu, count = trio.run(drive, port, server.pid)
        finally:
            server.kill()
            server.wait()
        print(f"{kind:15} {cpu / count * 1e6:7.1f} µs of server CPU per message echoed ({count})")


if __name__ == "__main__":
    main()
