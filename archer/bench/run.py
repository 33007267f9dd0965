"""``archer bench``: start a server, drive emulated calls through it, measure, report.

Layer: bench (process wiring and the measuring loop). The server under test runs in its own
process (``archer serve`` on a throw-away SQLite database, or the floor relay); the callers and
the agent run here, on one trio loop, on the lean WebSocket of ``archer.websocket_stream``.

One step of ``calls`` concurrent calls: the calls are placed one every ``RAMP_SECONDS``, run a
``WARMUP_SECONDS`` warm-up, then a measuring window of ``duration`` seconds; then every peer stops
sending, in-flight frames get ``SETTLE_SECONDS`` to land, and the callers hang up. Inside the
window it reads the server's CPU seconds and resident memory (``procstat``) and times every
frame sent (``peers``). A frame sent and never received is dropped.

Figures: latency is per direction, pooled over calls (p50/p99/max, ms); ``cpu_per_call`` is server
CPU seconds per call-second (the fraction of a core one call costs); ``rss_per_call`` is the rise
in resident memory over the idle server, per call. Ratios Archer / floor come from runs of the
same process, minutes apart, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from archer.bench import procstat
from archer.bench.options import build_parser
from archer.bench.peers import BenchAgent, BenchTarget, Window, new_call, run_caller
from archer.bench.report import (
    StepResult,
    format_soak,
    format_step,
    format_summary,
    machine,
    percentiles,
    summarise,
    summarise_soak,
)

#: How long a server may take to listen, and to stop after SIGTERM before it is killed.
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
RAMP_SECONDS: Final = 0.05
WARMUP_SECONDS: Final = 2.0
SETTLE_SECONDS: Final = 0.5
PUBLIC_BASE_URL: Final = "https://archer.bench.test"
ACCOUNT_SID: Final = "AC" + "b" * 32
AUTH_TOKEN: Final = "bench-auth-token"


class ServerFailed(Exception):
    """The server under test did not start; ``log`` holds the last lines it wrote."""

    def __init__(self, message: str, log: list[str]) -> None:
        super().__init__(message)
        self.log = log


@attrs.frozen
class Server:
    """A server process under test: what it is and where it listens."""

    kind: str  # "archer", "archer-media" (MEDIA_PORT) or "floor"
    process: trio.Process
    http_url: str
    media_url: str | None = None

    def target(self) -> BenchTarget:
        return BenchTarget(
            self.http_url, PUBLIC_BASE_URL, ACCOUNT_SID, AUTH_TOKEN, media_url=self.media_url
        )

    @property
    def pids(self) -> list[int]:
        return procstat.process_tree(self.process.pid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def start_server(
    kind: str,
    *,
    agent_port: int,
    workdir: Path,
    workers: int = 1,
    batch_ms: int = 20,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Server]:
    """Start Archer (or the floor) in its own process; stop it (SIGTERM, then kill) on exit."""
    port = free_port()
    media_port = free_port() if kind == "archer-media" else 0
    agent_url = f"ws://127.0.0.1:{agent_port}"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"}
    if kind == "floor":
        command = [sys.executable, "-m", "archer.bench.floor", "--port", str(port)]
        command += ["--agent-url", agent_url]
    else:
        command = [sys.executable, "-m", "archer", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--workers", str(workers)]
        env |= {
            "DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.db'}",
            "WEBHOOK_BASE_URL": PUBLIC_BASE_URL,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "CARTESIA_API_KEY": "sk_bench",
            "CARTESIA_AGENT_ID": "agent_bench",
            "CARTESIA_WS_URL": agent_url,
            "CARTESIA_AUDIO_FORMAT": "mulaw_8000",
            "AGENT_AUDIO_BATCH_MS": str(batch_ms),
            "SPOOL_PATH": str(workdir / "spool.jsonl"),
            "LOG_LEVEL": "warning",
            "DRAIN_TIMEOUT": "2",
            "MEDIA_PORT": str(media_port),
        }
    env |= extra_env or {}
    with (workdir / f"{kind}.log").open("ab") as log:
        process = await trio.lowlevel.open_process(
            command, env=env, cwd=workdir, stdout=log, stderr=log
        )
    server = Server(
        kind,
        process,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{media_port}" if media_port else None,
    )
    try:
        try:
            await _wait_until_listening(server, port)
        except (RuntimeError, trio.TooSlowError) as exc:
            # The log lives in a temporary directory that is about to go: quote its end.
            tail = (workdir / f"{kind}.log").read_text(errors="replace").strip().splitlines()[-5:]
            message = f"the {kind} server did not start ({exc or 'timed out'}); its log ends:"
            raise ServerFailed(message, tail) from None
        yield server
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _wait_until_listening(server: Server, port: int) -> None:
    with trio.fail_after(START_TIMEOUT):
        while server.process.poll() is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
            else:
                await stream.aclose()
                return
    raise RuntimeError(f"the {server.kind} server exited with {server.process.returncode}")


async def run_step(server: Server, agent: BenchAgent, calls: int, duration: float) -> StepResult:
    """``calls`` concurrent calls through ``server`` for a ``duration``-second window."""
    clock = time.perf_counter
    window = Window()
    agent.window = window
    agent.quiet = trio.Event()
    stats = [new_call(index) for index in range(calls)]
    agent.calls.clear()
    agent.calls.update({call.call_sid: call for call in stats})
    target = server.target()
    hang_up = trio.Event()
    idle_rss = procstat.resident_bytes(server.pids)
    async with trio.open_nursery() as nursery:
        for call in stats:
            nursery.start_soon(
                partial(run_caller, target, call, window, clock, hang_up=hang_up, quiet=agent.quiet)
            )
            await trio.sleep(RAMP_SECONDS)
        # A call that has not started by the end of the warm-up counts as failed.
        await trio.sleep(WARMUP_SECONDS)
        pids = server.pids
        cpu_before, load_before = procstat.cpu_seconds(pids), time.process_time()
        window.start = clock()
        await trio.sleep(duration)
        window.end = clock()
        cpu_used = procstat.cpu_seconds(pids) - cpu_before
        load_used = time.process_time() - load_before
        busy_rss = procstat.resident_bytes(pids)
        agent.quiet.set()
        await trio.sleep(SETTLE_SECONDS)
        hang_up.set()
    to_agent = [sample for call in stats for sample in call.to_agent.latencies]
    to_caller = [sample for call in stats for sample in call.to_caller.latencies]
    sent = sum(call.to_agent.sent + call.to_caller.sent for call in stats)
    received = sum(call.to_agent.received + call.to_caller.received for call in stats)
    failed = [call for call in stats if call.error is not None or call.setup_seconds is None]
    live = max(1, calls - len(failed))
    return StepResult(
        server=server.kind,
        calls=calls,
        duration=duration,
        to_agent_ms=percentiles(to_agent),
        to_caller_ms=percentiles(to_caller),
        frames_sent=sent,
        frames_dropped=sent - received,
        setup_ms=percentiles([c.setup_seconds for c in stats if c.setup_seconds is not None]),
        cpu_per_call=cpu_used / duration / live,
        server_cpu_cores=cpu_used / duration,
        rss_per_call_mib=(busy_rss - idle_rss) / live / 2**20,
        rss_mib=busy_rss / 2**20,
        load_cpu_cores=load_used / duration,
        failed_calls=len(failed),
        errors=sorted({call.error or "no session" for call in failed})[:5],
    )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run every step the arguments ask for, for Archer and (``--floor``) the floor."""
    results: dict[str, Any] = {
        "machine": machine(),
        "arguments": vars(args),
        "steps": [],
        "soaks": [],
    }
    kinds = [*args.servers, *(["floor"] if args.floor and "floor" not in args.servers else [])]
    counts = args.sweep or [args.calls]
    agent = BenchAgent({}, Window(), time.perf_counter)
    with tempfile.TemporaryDirectory(prefix="archer-bench-") as tmp:
        async with trio.open_nursery() as nursery:
            agent_port = await nursery.start(agent.serve)
            for kind in kinds:
                workdir = Path(tmp) / kind
                workdir.mkdir()
                async with start_server(
                    kind,
                    agent_port=agent_port,
                    workdir=workdir,
                    workers=args.workers,
                    batch_ms=args.batch_ms,
                    database_url=args.database_url,
                    extra_env=dict(args.server_env),
                ) as server:
                    # One short call first, so imports and first-use caches are not counted as
                    # per-call memory.
                    await run_step(server, agent, 1, 1.0)
                    for count in counts:
                        step = await run_step(server, agent, count, args.duration)
                        results["steps"].append(attrs.asdict(step))
                        print(format_step(step), flush=True)
                    if args.soak:
                        soaked = {
                            "server": kind,
                            **await soak(server, agent, args.calls, args.soak),
                        }
                        results["soaks"].append(soaked)
                        print(format_soak(soaked), flush=True)
            nursery.cancel_scope.cancel(reason="the benchmark is done")
    results["summary"] = summarise(results["steps"])
    return results


async def soak(server: Server, agent: BenchAgent, calls: int, seconds: float) -> dict[str, Any]:
    """``calls`` calls at all times for ``seconds``, each lasting 5–20 s, then the next.

    Resident memory is sampled every 10 s; ``summarise_soak`` says what is made of it.
    """
    clock = time.perf_counter
    window = Window()  # nothing timed: this is about memory
    agent.window = window
    agent.quiet = trio.Event()
    rng = random.Random(7)
    samples: list[tuple[float, int]] = []
    placed = failed = 0
    started = clock()
    target = server.target()

    async def line(slot: int) -> None:
        nonlocal placed, failed
        while clock() - started < seconds:
            call = new_call(slot)
            agent.calls[call.call_sid] = call
            hang_up, quiet = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(run_caller, target, call, window, clock, hang_up=hang_up, quiet=quiet)
                )
                await trio.sleep(rng.uniform(5, 20))
                hang_up.set()
                nursery.cancel_scope.deadline = trio.current_time() + 5
            placed += 1
            failed += call.error is not None
            del agent.calls[call.call_sid]

    async with trio.open_nursery() as nursery:
        for slot in range(calls):
            nursery.start_soon(line, slot)
            await trio.sleep(RAMP_SECONDS)
        while clock() - started < seconds:
            samples.append((clock() - started, procstat.resident_bytes(server.pids)))
            await trio.sleep(10)

    return {
        "calls": calls,
        "placed": placed,
        "failed": failed,
        **summarise_soak([(at, rss / 2**20) for at, rss in samples], seconds),
    }


def main(args: argparse.Namespace) -> int:
    if args.record_writes > 0:
        from archer.bench.record_writes import format_writes, measure

        writes = trio.run(measure, args.database_url, args.record_writes)
        print(format_writes(writes))
        if args.json is not None:
            args.json.write_text(json.dumps(writes, indent=2) + "\n")
        return 0
    if not procstat.available():
        print(
            "archer bench: needs Linux /proc to read the server's CPU and memory", file=sys.stderr
        )
        return 2
    failure: BaseException | None = None
    try:
        results = trio.run(bench, args)
    except* ServerFailed as group:
        failure = group
        while isinstance(failure, BaseExceptionGroup):  # nurseries nest their groups
            failure = failure.exceptions[0]
    if isinstance(failure, ServerFailed):
        print(f"archer bench: {failure}", *failure.log, sep="\n  ", file=sys.stderr)
        return 1
    print(format_summary(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    failed = sum(step["failed_calls"] for step in results["steps"])
    if failed:
        print(f"archer bench: {failed} calls failed (see FAILED above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser(argparse.ArgumentParser(prog="archer bench")).parse_args()))
