"""``archer serve --workers 2`` as an operator runs it: real processes, one shared socket.

The supervisor's log names each worker's pid (``workers.started``); every line a worker logs
carries its ``worker`` index, so a request answered by a worker shows which one answered it
(an unsigned webhook: 403 and one ``twilio.signature_rejected`` line, no database work).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from archer.db.spool import instance_spool_path, spool_files
from archer.workers import worker_instance_id
from tests.helpers import SERVING_ENV as SERVING
from tests.helpers import free_port, run_archer

#: Generous for a loaded CI machine; each wait returns as soon as its condition holds.
DEADLINE = 20.0


def until(check: Callable[[], bool], what: str, *, within: float = DEADLINE) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines written so far (a line still being written is skipped)."""
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def http_status(port: int, path: str, *, method: str = "GET") -> int:
    """The status of one request on a new connection (0 when nothing answers)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=None)
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError:
        return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def archer_workers(tmp_path: Path, port: int, workers: int) -> Iterator[subprocess.Popen[bytes]]:
    """``archer serve --workers N`` on SQLite in ``tmp_path``, its log in ``tmp_path/log``."""
    # Appending: the supervisor and the workers share this file (one line per write).
    with (tmp_path / "log").open("ab") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "archer", "serve", "--workers", str(workers)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            env={
                "PATH": os.environ["PATH"],
                **SERVING,
                "DATABASE_URL": f"sqlite:///{tmp_path / 'archer.db'}",
                "SPOOL_PATH": str(tmp_path / "spool" / "calls.jsonl"),
                "DRAIN_TIMEOUT": "2",
            },
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def worker_pids(log: Path, workers: int) -> dict[int, int]:
    """Worker index to pid, from the supervisor's ``workers.started`` lines."""

    def started() -> dict[int, int]:
        return {
            line["worker"]: line["pid"]
            for line in log_lines(log)
            if line["event"] == "workers.started"
        }

    until(lambda: len(started()) == workers, "the workers to start")
    return started()


def test_two_workers_share_the_socket_and_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    """Ready, both workers answer requests, SIGTERM: exit 0 within seconds, no worker left."""
    port = free_port()
    log = tmp_path / "log"
    with archer_workers(tmp_path, port, workers=2) as server:
        pids = worker_pids(log, 2)
        assert len(set(pids.values())) == 2
        assert server.pid not in pids.values()
        if Path("/proc").is_dir():  # Linux: the workers are the supervisor's children
            for pid in pids.values():
                stat = Path(f"/proc/{pid}/stat").read_text()
                assert int(stat.rsplit(")", 1)[1].split()[1]) == server.pid
        until(lambda: http_status(port, "/readyz") == 200, "/readyz 200")

        def both_workers_answered() -> bool:
            assert http_status(port, "/twilio/voice", method="POST") == 403
            answered = {
                line["worker"]
                for line in log_lines(log)
                if line["event"] == "twilio.signature_rejected"
            }
            return answered == {0, 1}

        # The kernel gives each new connection to whichever worker accepts first.
        until(both_workers_answered, "a request answered by each worker")
        assert all(alive(pid) for pid in pids.values())

        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=10)
    assert exit_code == 0
    assert not [pid for pid in pids.values() if alive(pid)]
    lines = log_lines(log)
    stopped = {line["worker"] for line in lines if line["event"] == "workers.worker_stopped"}
    assert stopped == {0, 1}
    assert {(line["worker"], line["event"]) for line in lines if "worker" in line} >= {
        (0, "server.stopped"),
        (1, "server.stopped"),
    }
    text = log.read_text(encoding="utf-8")
    assert "twilio-secret-token" not in text
    assert "sk_car_secret_key" not in text


def test_a_worker_dying_stops_the_others_and_the_supervisor_fails(tmp_path: Path) -> None:
    """Crash-loud: one worker killed, the others drain, the supervisor exits 1 naming it."""
    port = free_port()
    log = tmp_path / "log"
    with archer_workers(tmp_path, port, workers=2) as server:
        pids = worker_pids(log, 2)
        until(lambda: http_status(port, "/readyz") == 200, "/readyz 200")
        os.kill(pids[1], signal.SIGKILL)
        exit_code = server.wait(timeout=10)
    assert exit_code == 1
    assert not [pid for pid in pids.values() if alive(pid)]
    [stopped] = [line for line in log_lines(log) if line["event"] == "workers.stopped"]
    assert stopped["failed"] == [f"worker 1 (pid {pids[1]}) was killed by SIGKILL"]


def test_each_worker_is_an_instance_with_its_own_journal(tmp_path: Path) -> None:
    """Worker i of INSTANCE_ID gets ``<id>-w<i>``: its own lease and spool journal, which any
    instance's replay finds beside SPOOL_PATH (temporary and lock files are not journals)."""
    spool = tmp_path / "calls.jsonl"
    assert worker_instance_id("pod-a", 2) == "pod-a-w2"
    assert instance_spool_path(spool, "pod-a-w2") == tmp_path / "calls.pod-a-w2.jsonl"
    for name in ("calls.pod-a-w2.jsonl", "calls.worker1.jsonl", "calls.x.jsonl.tmp", "x.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "calls.pod-a-w2.jsonl.lock").write_text("")
    assert spool_files(spool) == [
        tmp_path / "calls.pod-a-w2.jsonl",
        tmp_path / "calls.worker1.jsonl",
    ]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_a_positive_number(value: str, tmp_path: Path) -> None:
    """A bad ``--workers`` is a usage error (exit 2) before anything starts."""
    result = run_archer("serve", "--workers", value, env=SERVING, cwd=tmp_path)
    assert result.returncode == 2
    assert "--workers" in result.stderr
