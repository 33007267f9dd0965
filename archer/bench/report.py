"""What ``archer bench`` measured: one step's figures, the summary across steps, the printout.

Layer: bench (pure: numbers in, numbers and text out). A step's figures are kept as the JSON
``--json`` writes, so the summary works the same on a run in memory and on a file read back.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

import attrs

from archer.bench.timing import interpreter_build

#: p99 latency past which a call count is over the knee (issue 7).
KNEE_MS: Final = 20.0
#: What a call count must meet to be "carried": p99 within this, no frame dropped.
CARRIED_MS: Final = 5.0
#: A long soak's resident memory is also reported at every such mark.
SOAK_MARK_SECONDS: Final = 600


@attrs.frozen
class StepResult:
    """What one step (a number of concurrent calls) measured."""

    server: str
    calls: int
    duration: float
    to_agent_ms: dict[str, float]
    to_caller_ms: dict[str, float]
    frames_sent: int
    frames_dropped: int
    setup_ms: dict[str, float]
    cpu_per_call: float
    server_cpu_cores: float
    rss_per_call_mib: float
    rss_mib: float
    load_cpu_cores: float
    failed_calls: int
    errors: list[str]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds (nearest rank); NaN when nothing was measured."""
    if not values:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1] * 1000, "n": len(ordered)}


def summarise(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server: the most calls carried (p99 ≤ 5 ms, nothing dropped) and the knee."""
    summary: dict[str, Any] = {}
    for kind in sorted({step["server"] for step in steps}):
        # A step where nothing was timed (every call failed) says nothing about latency.
        own = sorted(
            (s for s in steps if s["server"] == kind and s["to_agent_ms"]["n"]),
            key=lambda s: s["calls"],
        )
        worst = [max(s["to_agent_ms"]["p99"], s["to_caller_ms"]["p99"]) for s in own]
        carried = [
            s["calls"]
            for s, p99 in zip(own, worst, strict=True)
            if p99 <= CARRIED_MS and s["frames_dropped"] == 0 and not s["failed_calls"]
        ]
        over = [s["calls"] for s, p99 in zip(own, worst, strict=True) if not p99 <= KNEE_MS]
        summary[kind] = {
            "most_calls_carried": max(carried, default=0),
            "knee_calls": min(over) if over else None,
            "cpu_per_call": [s["cpu_per_call"] for s in own],
        }
    floor = {s["calls"]: s for s in steps if s["server"] == "floor"}
    summary["ratios"] = [
        {
            "server": s["server"],
            "calls": s["calls"],
            "cpu_per_call": _ratio(s["cpu_per_call"], floor[s["calls"]]["cpu_per_call"]),
            "p99_to_agent": _ratio(
                s["to_agent_ms"]["p99"], floor[s["calls"]]["to_agent_ms"]["p99"]
            ),
            "p99_to_caller": _ratio(
                s["to_caller_ms"]["p99"], floor[s["calls"]]["to_caller_ms"]["p99"]
            ),
            "rss_per_call": _ratio(s["rss_per_call_mib"], floor[s["calls"]]["rss_per_call_mib"]),
        }
        for s in steps
        if s["server"] != "floor" and s["calls"] in floor
    ]
    for kind, figures in summary.items():
        if kind not in ("floor", "ratios") and "floor" in summary:
            knee, floor_knee = figures["knee_calls"], summary["floor"]["knee_calls"]
            figures["knee_over_floor"] = (
                _ratio(knee, floor_knee) if knee is not None and floor_knee is not None else None
            )
    return summary


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def machine() -> dict[str, Any]:
    """The interpreter and machine the figures belong to."""
    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "build": interpreter_build(),
        "cpus": os.cpu_count(),
        "platform": sys.platform,
    }


def format_step(step: StepResult) -> str:
    def ms(d: dict[str, float]) -> str:
        return f"{d['p50']:6.2f} {d['p99']:6.2f} {d['max']:7.1f}"

    return (
        f"{step.server:6} {step.calls:4d} calls  to agent p50/p99/max {ms(step.to_agent_ms)} ms"
        f"  to caller {ms(step.to_caller_ms)} ms  dropped {step.frames_dropped}/{step.frames_sent}"
        f"  set-up p50 {step.setup_ms['p50']:5.1f} ms  cpu/call {step.cpu_per_call * 100:5.2f} %"
        f"  ({step.server_cpu_cores:4.2f} cores)  rss/call {step.rss_per_call_mib:5.2f} MiB"
        f"  load {step.load_cpu_cores:4.2f} cores"
        + (f"  FAILED {step.failed_calls}: {'; '.join(step.errors)}" if step.failed_calls else "")
    )


def summarise_soak(samples: Sequence[tuple[float, float]], seconds: float) -> dict[str, Any]:
    """Resident memory over a soak, from ``(seconds in, MiB)`` samples.

    Every figure is a minute's mean, so one sample's noise does not count as growth: the first
    minute (from 10 s in), the last, the middle one (warming — pools, caches, the allocator —
    shows early, a leak keeps growing, so the second half's growth tells them apart), and the
    minute ending at each 10-minute mark, to show where growth stops in a long soak.
    """

    def mean_mib(start: float) -> float:
        window = [mib for at, mib in samples if start <= at < start + 60] or [samples[-1][1]]
        return sum(window) / len(window)

    first, half, last = mean_mib(10), mean_mib(seconds / 2 - 30), mean_mib(seconds - 60)
    marks = range(SOAK_MARK_SECONDS, int(seconds), SOAK_MARK_SECONDS)
    return {
        "seconds": seconds,
        "rss_first_minute_mib": first,
        "rss_last_minute_mib": last,
        "growth_mib": last - first,
        "growth_second_half_mib": last - half,
        "rss_by_10_minutes_mib": [first, *(mean_mib(mark - 60) for mark in marks), last],
        "samples": [(round(at, 1), round(mib, 2)) for at, mib in samples],
    }


def format_soak(soak: dict[str, Any]) -> str:
    marks = soak["rss_by_10_minutes_mib"]
    every_10_minutes = " ".join(f"{mib:.1f}" for mib in marks)
    return (
        f"soak {soak['server']}: {soak['calls']} calls for {soak['seconds']:g} s,"
        f" {soak['placed']} calls placed, {soak['failed']} failed;"
        f" rss first minute {soak['rss_first_minute_mib']:.1f} MiB,"
        f" last minute {soak['rss_last_minute_mib']:.1f} MiB, growth {soak['growth_mib']:+.2f} MiB"
        f" ({soak['growth_second_half_mib']:+.2f} MiB in the second half)"
        + (f"; every 10 min: {every_10_minutes} MiB" if len(marks) > 2 else "")
    )


def format_summary(results: dict[str, Any]) -> str:
    lines = [f"machine: {json.dumps(results['machine'])}"]
    for kind, figures in results["summary"].items():
        if kind == "ratios":
            for ratio in figures:
                lines.append(
                    f"{ratio['server']}/floor at {ratio['calls']} calls:"
                    f" cpu/call {ratio['cpu_per_call']:.2f}x,"
                    f" p99 to agent {ratio['p99_to_agent']:.2f}x,"
                    f" p99 to caller {ratio['p99_to_caller']:.2f}x,"
                    f" rss/call {ratio['rss_per_call']:.2f}x"
                )
        else:
            knee_ratio = figures.get("knee_over_floor")
            lines.append(
                f"{kind}: most calls carried (p99 <= {CARRIED_MS:g} ms, none dropped):"
                f" {figures['most_calls_carried']}; knee (p99 > {KNEE_MS:g} ms):"
                f" {figures['knee_calls'] or 'not reached'}"
                + (f" ({knee_ratio:.2f}x the floor's)" if knee_ratio is not None else "")
            )
    return "\n".join(lines)
