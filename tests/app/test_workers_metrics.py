"""``archer serve --workers 2``: one scrape of ``/metrics`` reports the whole server.

Real processes on one shared socket; the kernel gives each connection to whichever worker
accepts first, so calls are placed until the workers' own log lines show that both carry some.
Then a single scrape (answered by either worker) must count every live call, and after the
calls end every finished one — the sum over both workers, not one worker's share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.peers import AgentPeer, AgentServer, TwilioCaller
from tests.helpers import SERVING_ENV, eventually, free_port

BASE_URL = SERVING_ENV["WEBHOOK_BASE_URL"]
#: Enough calls that both workers get some, with overwhelming likelihood; more are placed
#: (up to ``MAX_CALLS``) if the first ones all went to one worker.
FIRST_CALLS = 6
MAX_CALLS = 16


async def stay_on_the_line(peer: AgentPeer) -> None:
    await peer.accept_session()
    await peer.closed.wait()


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a line still being written
    return lines


def per_worker(path: Path, event: str) -> Counter[int]:
    return Counter(line["worker"] for line in log_lines(path) if line["event"] == event)


def scrape(port: int) -> dict[str, float]:
    """One scrape: each sample name summed over its label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return dict(totals)


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return int(reply.status)
    except OSError:
        return 0


async def test_one_scrape_sums_every_worker(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "log"
    async with trio.open_nursery() as nursery:
        agent = AgentServer(stay_on_the_line)
        agent.api_key = SERVING_ENV["CARTESIA_API_KEY"]
        await nursery.start(agent.run)
        with log.open("ab") as log_file:
            server = await trio.lowlevel.open_process(
                [
                    *(sys.executable, "-m", "archer", "serve", "--workers", "2"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                ],
                env={
                    "PATH": os.environ["PATH"],
                    **SERVING_ENV,
                    "CARTESIA_WS_URL": agent.url,
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'archer.db'}",
                    "SPOOL_PATH": str(tmp_path / "spool" / "calls.jsonl"),
                    "DRAIN_TIMEOUT": "2",
                },
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        try:

            async def ready() -> bool:
                return await trio.to_thread.run_sync(readyz, port) == 200

            with trio.fail_after(30):
                await eventually(ready)
            callers: list[TwilioCaller] = []

            async def place_call() -> None:
                n = len(callers) + 1
                caller = TwilioCaller(
                    archer_url=f"http://127.0.0.1:{port}",
                    public_base_url=BASE_URL,
                    auth_token=SERVING_ENV["TWILIO_AUTH_TOKEN"],
                    call_sid=f"CA{n:032x}",
                    stream_sid=f"MZ{n:032x}",
                )
                assert "<Stream" in (await caller.dial()).text
                await caller.connect(nursery)
                callers.append(caller)

            async def all_started() -> bool:
                return sum(per_worker(log, "call.started").values()) == len(callers)

            for _ in range(FIRST_CALLS):
                await place_call()
            with trio.fail_after(20):
                await eventually(all_started)
            while len(per_worker(log, "call.started")) < 2 and len(callers) < MAX_CALLS:
                await place_call()
                with trio.fail_after(20):
                    await eventually(all_started)
            started = per_worker(log, "call.started")
            assert set(started) == {0, 1}, f"all calls landed on one worker: {started}"

            live = await trio.to_thread.run_sync(scrape, port)
            assert live["archer_calls_active"] == len(callers)
            # Both workers' caps, and the same answer whichever worker takes the scrape.
            assert live["archer_calls_capacity"] == 2 * 50
            for _ in range(4):
                again = await trio.to_thread.run_sync(scrape, port)
                assert again["archer_calls_active"] == len(callers)

            for caller in callers:
                await caller.stop()

            async def all_finished() -> bool:
                return sum(per_worker(log, "call.finished").values()) == len(callers)

            with trio.fail_after(20):
                await eventually(all_finished)
            finished = await trio.to_thread.run_sync(scrape, port)
            assert finished["archer_calls_total"] == len(callers)
            assert finished["archer_calls_active"] == 0
            assert finished["archer_call_duration_seconds_count"] == len(callers)

            server.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                exit_code = await server.wait()
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
            nursery.cancel_scope.cancel()
    assert exit_code == 0
    [starting] = [line for line in log_lines(log) if line["event"] == "workers.starting"]
    assert not await trio.Path(starting["metrics_dir"]).exists()  # the supervisor cleaned up
