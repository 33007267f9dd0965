"""A memory probe for the server under ``archer bench`` (investigation only, never deployed).

Run, from the repository root:
    archer bench --servers archer-media --calls 12 --soak 480 \\
        --server-env PYTHONPATH=$PWD/bench/memory_probe --server-env PROBE_OUT=/tmp/probe

Python imports ``sitecustomize`` at start-up, so the server traces its allocations
(``tracemalloc``, one frame each) and every ``$PROBE_INTERVAL`` seconds (default 30) appends to
``$PROBE_OUT.series`` the process's resident memory beside the Python heap tracemalloc sees and
the number of memory blocks Python has allocated: RSS rising while the heap stays flat points
outside Python objects (allocator arenas, C buffers). With ``--sweep 20,20,20,…`` and
``PROBE_INTERVAL=1``, the lowest heap between two steps is the server at rest: a leak raises it
step after step. With ``PROBE_SNAPSHOTS=1`` it also
writes the lines whose allocations grew since 150 s in to ``$PROBE_OUT`` each minute; snapshots
are costly, so that run measures RSS poorly.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _watch(out: str, snapshots: bool, interval: float) -> None:
    started = time.monotonic()
    base: tracemalloc.Snapshot | None = None
    compared_at = 0.0
    with open(out + ".series", "w") as series:
        while True:
            time.sleep(interval)
            at = time.monotonic() - started
            heap, _ = tracemalloc.get_traced_memory()
            rss = _resident_mib()
            series.write(
                f"{at:7.1f} s  rss {rss:7.2f} MiB  python heap {heap / 2**20:7.2f} MiB"
                f"  blocks {sys.getallocatedblocks()}\n"
            )
            series.flush()
            if not snapshots or at < 150:
                continue
            if base is None:
                base = tracemalloc.take_snapshot()
            elif at - compared_at >= 60:  # once a minute, whatever the interval
                compared_at = at
                grown = tracemalloc.take_snapshot().compare_to(base, "lineno")
                with open(out, "w") as report:
                    report.writelines(f"{stat}\n" for stat in grown[:15])


if os.environ.get("PROBE_OUT"):
    tracemalloc.start(1)
    threading.Thread(
        target=_watch,
        args=(
            os.environ["PROBE_OUT"],
            bool(os.environ.get("PROBE_SNAPSHOTS")),
            float(os.environ.get("PROBE_INTERVAL", "30")),
        ),
        daemon=True,
    ).start()
