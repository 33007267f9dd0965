"""``archer bench``, smoke-sized: 2 calls for 2 s through Archer and the floor, as real processes.

The figures themselves are not judged here (performance is measured, not asserted); this checks
that the bench really drives calls through both servers, times frames end to end and reads the
server's CPU and memory, and that its JSON holds what the README quotes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archer.bench import procstat
from archer.bench.peers import (
    BenchTarget,
    read_tags,
    tagged_frame,
)
from archer.bench.report import format_soak, percentiles, summarise, summarise_soak
from archer.cartesia import managed
from archer.emulators.twilio.frames import CallerFrames
from tests.contract.schemas import validate_cartesia_server_message, validate_twilio_inbound

needs_proc = pytest.mark.skipif(not procstat.available(), reason="archer bench needs Linux /proc")


def _step(server: str, calls: int, p99_ms: float, cpu: float, dropped: int = 0) -> dict[str, Any]:
    latency = {"p50": 1.0, "p99": p99_ms, "max": p99_ms, "n": 100}
    return {
        "server": server,
        "calls": calls,
        "to_agent_ms": latency,
        "to_caller_ms": {**latency, "p99": 1.0},
        "frames_dropped": dropped,
        "failed_calls": 0,
        "cpu_per_call": cpu,
        "rss_per_call_mib": 0.1,
    }


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    figures = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (figures["p50"], figures["p99"], figures["max"], figures["n"]) == (50, 99, 100, 100)
    assert percentiles([])["n"] == 0


def test_the_summary_finds_what_is_carried_the_knee_and_the_ratios() -> None:
    steps = [
        _step("archer", 20, 3.0, 0.020),
        _step("archer", 30, 4.0, 0.018, dropped=1),  # dropped a frame: not carried
        _step("archer", 40, 25.0, 0.016),
        _step("floor", 20, 4.0, 0.020),
        _step("floor", 30, 21.0, 0.018),
        _step("floor", 40, 30.0, 0.016),
    ]
    summary = summarise(steps)
    assert summary["archer"]["most_calls_carried"] == 20
    assert (summary["archer"]["knee_calls"], summary["floor"]["knee_calls"]) == (40, 30)
    assert summary["archer"]["knee_over_floor"] == pytest.approx(40 / 30)
    assert [r["calls"] for r in summary["ratios"]] == [20, 30, 40]
    assert summary["ratios"][0]["p99_to_agent"] == pytest.approx(3.0 / 4.0)
    assert summary["ratios"][2]["cpu_per_call"] == pytest.approx(1.0)


def test_a_soak_tells_warming_that_stops_from_growth_that_goes_on() -> None:
    every_10_s = [float(at) for at in range(0, 1800, 10)]
    # 100 MiB warming to 102 over the first 10 minutes, then flat...
    warming = [(at, 100 + 2 * min(at, 600) / 600) for at in every_10_s]
    # ...against 1 MiB more every 10 minutes, all the way.
    leaking = [(at, 100 + at / 600) for at in every_10_s]

    warmed, leaked = summarise_soak(warming, 1800), summarise_soak(leaking, 1800)

    # Each figure is a minute's mean: the first minute's samples are at 10..60 s (mean 35 s in),
    # the minute to the 10-minute mark's at 540..590 s (mean 565 s), the last's at 1740..1790 s
    # (mean 1765 s), the middle one's at 870..920 s (mean 895 s).
    first_warming, first_leaking = 100 + 2 * 35 / 600, 100 + 35 / 600
    assert warmed["growth_mib"] == pytest.approx(102 - first_warming)
    assert warmed["growth_second_half_mib"] == 0
    assert leaked["growth_second_half_mib"] == pytest.approx((1765 - 895) / 600)
    assert warmed["rss_by_10_minutes_mib"] == pytest.approx(
        [first_warming, 100 + 2 * 565 / 600, 102, 102]
    )
    assert leaked["rss_by_10_minutes_mib"] == pytest.approx(
        [first_leaking, 100 + 565 / 600, 100 + 1165 / 600, 100 + 1765 / 600]
    )
    printed = format_soak({"server": "archer", "calls": 20, "placed": 2100, "failed": 0, **warmed})
    assert printed.endswith("every 10 min: 100.1 101.9 102.0 102.0 MiB")
    assert "every 10 min" not in format_soak(
        {
            "server": "archer",
            "calls": 20,
            "placed": 700,
            "failed": 0,
            **summarise_soak(warming, 600),
        }
    )


@needs_proc
def test_a_two_call_bench_measures_archer_and_the_floor(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "archer", "bench", "--calls", "2", "--duration", "2"]
    finished = subprocess.run(
        [*command, "--floor", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    results = json.loads(out.read_text())
    assert [step["server"] for step in results["steps"]] == ["archer", "floor"]
    for step in results["steps"]:
        assert step["failed_calls"] == 0, step["errors"]
        # 2 calls x 2 directions x 50 frames/s, for warm-up plus window: well over 400 frames.
        assert step["frames_sent"] > 400
        assert step["frames_dropped"] == 0
        for direction in ("to_agent_ms", "to_caller_ms"):
            # Every frame sent in the 2 s window was timed at the far end: about 2 x 100.
            assert 180 <= step[direction]["n"] <= 220
            assert 0 < step[direction]["p50"] <= step[direction]["p99"] <= step[direction]["max"]
        assert step["setup_ms"]["n"] == 2
        assert step["cpu_per_call"] > 0
        assert step["rss_mib"] > 10
    [ratio] = results["summary"]["ratios"]
    assert ratio["server"] == "archer"
    assert ratio["cpu_per_call"] > 0
    assert results["machine"]["python"] == sys.version.split()[0]
    assert "archer/floor at 2 calls: cpu/call" in finished.stdout


def test_the_bench_peers_speak_the_published_protocols() -> None:
    """What the bench's callers and agent send validates against Twilio's and Cartesia's
    AsyncAPI documents, so the bench measures real traffic."""
    target = BenchTarget("http://127.0.0.1:1", "https://archer.example.com", "AC" + "b" * 32, "t")
    stream_sid, call_sid = "MZ" + "1" * 32, "CA" + "2" * 32
    payload = tagged_frame(3, 41, 12.5)
    frames = CallerFrames(stream_sid, target.account_sid, call_sid)
    opening = [frames.connected(), frames.start({"token": "abc"})]
    media = [frames.media(payload) for _ in range(41)]
    for message in (*opening, *media, frames.stop()):
        validate_twilio_inbound(message)
    assert json.loads(media[-1])["media"]["payload"] == payload
    assert read_tags(payload) == [(41, 12.5)]
    validate_cartesia_server_message(managed.audio_output(payload))


async def test_record_writes_counts_every_write_of_a_scripted_call() -> None:
    """``archer bench --record-writes``: webhook, claim, 12 turns, 3 tool results, 1 side effect
    written before it acted, the final flush and the status callback; nothing left behind."""
    from archer.bench.record_writes import format_writes, measure

    result = await measure(None, 2)

    assert result["writes_per_call"] == 20
    counts = {name: ops["count_per_call"] for name, ops in result["operations"].items()}
    assert counts == {
        "open_call": 1,
        "claim_stream": 1,
        "as_it_goes": 16,
        "final_flush": 1,
        "record_twilio_status": 1,
    }
    assert "writes per call: 20.0" in format_writes(result)
