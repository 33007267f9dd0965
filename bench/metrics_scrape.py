"""What prometheus_client's multiprocess mode (``archer serve --workers N``) costs Archer.

Two figures, each against the single-process registry in the same run: one ``/metrics`` render
(``Metrics.render``: in multiprocess mode it reads every worker's files) and one histogram
observation (the only metric call on the per-frame path, fed one frame in 50). Two worker
processes fill a fresh multiprocess directory with a call's worth of values first.

    .venv/bin/python bench/metrics_scrape.py [--workers 2] [--renders 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBSERVATIONS = 10_000


def fill_and_time(directory: Path, *, render: bool, renders: int) -> None:
    """In a process started with PROMETHEUS_MULTIPROC_DIR: one worker's values, then timings."""
    from archer.metrics import Metrics

    metrics = Metrics(multiprocess_dir=directory, max_active_calls=50)
    metrics.call_started()
    for _ in range(100):
        metrics.frame_latency("to_agent", 0.001)
        metrics.db_operation("save_call", 0.01, error=False)
    if render:
        report("multiprocess", metrics, renders)


def report(mode: str, metrics: object, renders: int) -> None:
    from archer.metrics import Metrics

    assert isinstance(metrics, Metrics)
    metrics.render()
    started = time.perf_counter()
    for _ in range(renders):
        metrics.render()
    render_ms = (time.perf_counter() - started) / renders * 1000
    started = time.perf_counter()
    for _ in range(OBSERVATIONS):
        metrics.frame_latency("to_agent", 0.001)
    observe_us = (time.perf_counter() - started) / OBSERVATIONS * 1e6
    print(f"{mode:>14}: render {render_ms:.2f} ms, histogram observe {observe_us:.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument("--child", choices=("fill", "render"), help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fill_and_time(args.directory, render=args.child == "render", renders=args.renders)
        return
    with tempfile.TemporaryDirectory(prefix="archer-metrics-bench-") as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        for index in range(args.workers):
            child = "render" if index == args.workers - 1 else "fill"
            command = [sys.executable, __file__, "--child", child, "--directory", directory]
            command += ["--renders", str(args.renders)]
            subprocess.run(command, env=env, check=True)
    from archer.metrics import Metrics

    report("single process", Metrics(max_active_calls=50), args.renders)


if __name__ == "__main__":
    main()
