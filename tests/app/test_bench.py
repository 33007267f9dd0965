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

import pytest

from archer.bench import procstat

pytestmark = pytest.mark.skipif(not procstat.available(), reason="archer bench needs Linux /proc")


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
