"""SIGTERM with calls in progress: a real ``archer serve`` process drains, then stops.

Under the default settings the drain outlasts any call (``DRAIN_TIMEOUT`` defaults to the
longest a call can still run), so a deploy cuts none: the last test holds a call past 30 s.

Three calls are live when the signal arrives. From then on ``/readyz`` answers 503 and a new
call hears the apology; one call ends on its own during the drain, the other two are cut at
``DRAIN_TIMEOUT`` and flushed as ``server_shutdown``; the process exits within the drain timeout
plus the flush timeout (and hypercorn's one-second grace).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import trio

from tests.e2e.peers import AgentPeer, AgentServer, TwilioCaller
from tests.helpers import audio, eventually, free_port

DRAIN_TIMEOUT = 2.0
FLUSH_TIMEOUT = 2.0
AUTH_TOKEN = "drain-test-auth-token"
BASE_URL = "https://archer.drain.test"


def readyz(port: int) -> int:
    """The HTTP status of ``/readyz`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError:
        return 0


async def stay_on_the_line(peer: AgentPeer) -> None:
    await peer.accept_session()
    await peer.closed.wait()


async def test_sigterm_drains_live_calls_and_records_them_all(tmp_path: Path) -> None:
    """/readyz 503 while draining, new calls refused politely, every record lands, quick exit."""
    port = free_port()
    database = tmp_path / "archer.db"
    async with trio.open_nursery() as nursery:
        agent = AgentServer(stay_on_the_line)
        await nursery.start(agent.run)
        env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": f"sqlite:///{database}",
            "WEBHOOK_BASE_URL": BASE_URL,
            "TWILIO_ACCOUNT_SID": "AC" + "d" * 32,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "CARTESIA_API_KEY": agent.api_key,
            "CARTESIA_AGENT_ID": "agent_drain",
            "CARTESIA_WS_URL": agent.url,
            "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
            "FLUSH_TIMEOUT": str(FLUSH_TIMEOUT),
            "SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
        server = await trio.lowlevel.open_process(
            [sys.executable, "-m", "archer", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def ready() -> bool:
                return await trio.to_thread.run_sync(readyz, port) == 200

            with trio.fail_after(30):
                await eventually(ready)
            callers = [
                TwilioCaller(
                    archer_url=f"http://127.0.0.1:{port}",
                    public_base_url=BASE_URL,
                    auth_token=AUTH_TOKEN,
                    call_sid=f"CA{n:032x}",
                    stream_sid=f"MZ{n:032x}",
                )
                for n in range(1, 4)
            ]
            for caller in callers:
                await caller.dial()
                await caller.connect(nursery)

            async def three_live() -> bool:
                return len(agent.peers) == 3

            with trio.fail_after(10):
                await eventually(three_live)

            signalled = trio.current_time()
            server.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return await trio.to_thread.run_sync(readyz, port) == 503

            with trio.fail_after(5):
                await eventually(draining)
            newcomer = TwilioCaller(
                archer_url=f"http://127.0.0.1:{port}",
                public_base_url=BASE_URL,
                auth_token=AUTH_TOKEN,
                call_sid="CA" + "e" * 32,
            )
            apology = await newcomer.dial()
            assert apology.status == 200
            assert "<Say>" in apology.text
            assert "<Stream" not in apology.text
            await callers[0].stop()  # one call ends on its own while the server drains
            with trio.fail_after(DRAIN_TIMEOUT + FLUSH_TIMEOUT + 10):
                exit_code = await server.wait()
            took = trio.current_time() - signalled
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
            nursery.cancel_scope.cancel()
    assert exit_code == 0
    assert took <= DRAIN_TIMEOUT + FLUSH_TIMEOUT + 1.0 + 1.0  # + grace + process exit
    with sqlite3.connect(database) as db:
        rows = dict(
            ((sid, (status, end_reason)) for sid, status, end_reason in db.execute(
                "SELECT call_sid, status, end_reason FROM calls"
            ))
        )  # fmt: skip
    assert rows == {
        callers[0].call_sid: ("completed", "caller_hangup"),
        callers[1].call_sid: ("failed", "server_shutdown"),
        callers[2].call_sid: ("failed", "server_shutdown"),
    }


#: Longer than the old 30 s DRAIN_TIMEOUT default, which cut every such call at a deploy.
LONG_CALL_SECONDS = 32.0


async def test_a_call_longer_than_30_s_outlives_a_sigterm_under_the_default_settings(
    tmp_path: Path,
) -> None:
    """Default DRAIN_TIMEOUT: a call in progress at SIGTERM, and one answered just before whose
    stream arrives during the drain (on the media listener), both run on past 30 s, end
    normally and are recorded; then the process exits 0 on its own."""
    port, media_port = free_port(), free_port()
    database = tmp_path / "archer.db"
    async with trio.open_nursery() as nursery:
        agent = AgentServer(stay_on_the_line)
        await nursery.start(agent.run)
        env = {  # no DRAIN_TIMEOUT, no FLUSH_TIMEOUT, no MAX_CALL_SECONDS: the defaults
            "PATH": os.environ["PATH"],
            "DATABASE_URL": f"sqlite:///{database}",
            "WEBHOOK_BASE_URL": BASE_URL,
            "TWILIO_ACCOUNT_SID": "AC" + "d" * 32,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "CARTESIA_API_KEY": agent.api_key,
            "CARTESIA_AGENT_ID": "agent_drain",
            "CARTESIA_WS_URL": agent.url,
            "SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            "MEDIA_PORT": str(media_port),
        }
        server = await trio.lowlevel.open_process(
            [sys.executable, "-m", "archer", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def ready() -> bool:
                return await trio.to_thread.run_sync(readyz, port) == 200

            with trio.fail_after(30):
                await eventually(ready)
            in_progress, answered = (
                TwilioCaller(
                    archer_url=f"http://127.0.0.1:{port}",
                    public_base_url=BASE_URL,
                    auth_token=AUTH_TOKEN,
                    media_url=media_url,
                    call_sid=f"CA{n:032x}",
                    stream_sid=f"MZ{n:032x}",
                )
                for n, media_url in ((1, None), (2, f"http://127.0.0.1:{media_port}"))
            )
            await in_progress.dial()
            await in_progress.connect(nursery)
            await answered.dial()  # answered before the signal; its stream comes after it

            async def one_live() -> bool:
                return len(agent.peers) == 1

            with trio.fail_after(10):
                await eventually(one_live)
            started = trio.current_time()
            server.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return await trio.to_thread.run_sync(readyz, port) == 503

            with trio.fail_after(5):
                await eventually(draining)
            await answered.connect(nursery)

            async def two_live() -> bool:
                return len(agent.peers) == 2

            with trio.fail_after(10):
                await eventually(two_live)
            # Both calls talk on past the old 30 s drain: a frame a second each.
            frames = 0
            while trio.current_time() - started < LONG_CALL_SECONDS:
                for caller in (in_progress, answered):
                    await caller.speak(audio(frames))
                frames += 1
                await trio.sleep(1)
            assert server.returncode is None  # still draining, calls still carried
            assert not in_progress.closed.is_set()
            assert not answered.closed.is_set()
            for caller in (in_progress, answered):
                await caller.stop()
            with trio.fail_after(15):
                exit_code = await server.wait()
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
            nursery.cancel_scope.cancel()
    assert exit_code == 0
    with sqlite3.connect(database) as db:
        rows = {
            sid: (status, end_reason, duration_ms, frames_in)
            for sid, status, end_reason, duration_ms, frames_in in db.execute(
                "SELECT call_sid, status, end_reason, duration_ms, frames_in FROM calls"
            )
        }
    assert set(rows) == {in_progress.call_sid, answered.call_sid}
    for status, end_reason, duration_ms, frames_in in rows.values():
        assert (status, end_reason) == ("completed", "caller_hangup")
        assert frames_in == frames
        assert duration_ms > (LONG_CALL_SECONDS - 5) * 1000
    assert rows[in_progress.call_sid][2] > 30_000
