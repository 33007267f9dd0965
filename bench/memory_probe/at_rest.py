"""The server's Python heap at rest after each round of calls: flat, or a leak (investigation).

Run, from the repository root (``--database-url`` for PostgreSQL):
    python bench/memory_probe/at_rest.py --rounds 40 --calls 20 --seconds 10

Starts ``archer serve`` with the media listener and this folder's ``sitecustomize`` probe
(tracemalloc, sampling every 0.5 s), then repeats: ``--calls`` bench calls for ``--seconds``,
all hung up, four seconds of rest, and the probe's last sample printed. Every call's objects
should be gone at rest, so the heap there stays level round after round if nothing leaks; one
that rises with the rounds is a leak of about (rise / calls placed) per call. Resident memory,
printed beside it, also counts what the allocators keep after a peak, and tracemalloc's own
bookkeeping.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from archer.bench.peers import BenchAgent, Window
from archer.bench.run import run_step, start_server

REST_SECONDS = 4.0
#: This folder, whose ``sitecustomize`` the server imports.
PROBE_DIR = Path(__file__).resolve().parent


async def measure(args: argparse.Namespace) -> None:
    series = trio.Path(args.out + ".series")
    agent = BenchAgent({}, Window(), time.perf_counter)
    with tempfile.TemporaryDirectory(prefix="archer-at-rest-") as tmp:
        async with trio.open_nursery() as nursery:
            agent_port = await nursery.start(agent.serve)
            probe = {
                "PYTHONPATH": str(PROBE_DIR),
                "PROBE_OUT": args.out,
                "PROBE_INTERVAL": "0.5",
            }
            async with start_server(
                "archer-media",
                agent_port=agent_port,
                workdir=Path(tmp),
                database_url=args.database_url,
                extra_env=probe,
            ) as server:
                for round_ in range(args.rounds):
                    step = await run_step(server, agent, args.calls, args.seconds)
                    await trio.sleep(REST_SECONDS)
                    at_rest = (await series.read_text()).splitlines()[-1]
                    print(f"round {round_:3d}  failed {step.failed_calls}  {at_rest}", flush=True)
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--out", default="/tmp/archer-at-rest", help="the probe's file prefix")
    trio.run(measure, parser.parse_args())


if __name__ == "__main__":
    main()
