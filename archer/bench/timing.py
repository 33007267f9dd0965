"""Micro-benchmark helpers shared by ``bench/*.py`` and ``archer bench``: timing and the build.

Layer: bench (pure measuring helpers; nothing imports them at serve time).
"""

from __future__ import annotations

import sysconfig
import time
from collections.abc import Callable


def best_of_us(bench: Callable[[], object], *, repeat: int = 5) -> float:
    """Best of ``repeat`` loops of ``bench``, in µs per call; each loop runs ≥ 20 ms (as timeit
    does). The best loop is the one least disturbed by whatever else the machine was doing."""
    number = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(number):
            bench()
        if time.perf_counter_ns() - start >= 20_000_000:
            break
        number *= 4
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            bench()
        best = min(best, (time.perf_counter_ns() - start) / number / 1000)
    return best


def interpreter_build() -> str:
    """How this CPython was compiled (-O level, PGO, LTO): per-frame costs depend on it."""
    cflags = str(sysconfig.get_config_var("PY_CFLAGS") or "")
    config_args = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    levels = sorted({flag for flag in cflags.split() if flag in ("-O2", "-O3")}) or ["no -O2/-O3"]
    pgo = "--enable-optimizations" in config_args
    lto = "--with-lto" in config_args
    return f"{' '.join(levels)}; PGO {'yes' if pgo else 'no'}; LTO {'yes' if lto else 'no'}"
