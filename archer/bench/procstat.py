"""CPU time and resident memory of a server process and its children, read from ``/proc``.

Layer: bench. Linux only (``/proc``); ``archer bench`` says so and stops elsewhere. A process
that has exited between two reads simply stops counting: the bench reads the tree whole, at
the start and the end of a measuring window, and workers do not come and go mid-run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

_PROC: Final = Path("/proc")
_TICKS_PER_SECOND: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return (_PROC / "self" / "stat").exists()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (workers, their helpers), parents first."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in (_PROC / str(tree[index]) / "task").glob("*/children"):
            with contextlib.suppress(OSError):  # the task ended while we looked
                tree.extend(int(child) for child in task.read_text().split())
        index += 1
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) start at state, field 3.
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS_PER_SECOND


def resident_bytes(pids: list[int]) -> int:
    """Resident memory of the processes together (``VmRSS``)."""
    total = 0
    for pid in pids:
        try:
            status = (_PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total
