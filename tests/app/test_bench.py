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
    connected_frame,
    media_frame,
    read_tags,
    start_frame,
    stop_frame,
    tagged_frame,
)
from archer.bench.report import percentiles, summarise
from archer.cartesia import managed
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
    for message in (
        connected_frame(),
        start_frame(target, call_sid, stream_sid, {"token": "abc"}),
        media_frame(stream_sid, 41, payload),
        stop_frame(target, call_sid, stream_sid, frames_sent=42),
    ):
        validate_twilio_inbound(message)
    assert json.loads(media_frame(stream_sid, 41, payload))["media"]["payload"] == payload
    assert read_tags(payload) == [(41, 12.5)]
    validate_cartesia_server_message(managed.audio_output(payload))
