"""``archer emulate cartesia`` and ``archer emulate call`` against a separately started
``archer serve``: three processes, one ``.env``, real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port


def wait_until_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, f"nothing listening on {port}"
            time.sleep(0.1)


def test_the_emulators_drive_a_separately_started_archer(tmp_path: Path) -> None:
    """The caller and agent emulators, as commands, carry a whole call through ``archer serve``."""
    archer_port, agent_port, rest_port = free_port(), free_port(), free_port()
    (tmp_path / ".env").write_text(
        "\n".join(
            [
                "WEBHOOK_BASE_URL=https://archer.example.test",
                "TWILIO_ACCOUNT_SID=AC" + "1" * 32,
                "TWILIO_AUTH_TOKEN=three-processes-token",
                f"TWILIO_API_BASE_URL=http://127.0.0.1:{rest_port}",
                "CARTESIA_API_KEY=sk_car_three_processes",
                # Not the emulator's own id: it serves the one .env names too.
                "CARTESIA_AGENT_ID=agent_from_dotenv",
                f"CARTESIA_WS_URL=ws://127.0.0.1:{agent_port}",
                f"DATABASE_URL=sqlite:///{tmp_path / 'archer.db'}",
            ]
        )
    )
    (tmp_path / "agent.json").write_text(
        json.dumps({"steps": [{"say": "agent_greeting"}, {"hang_up": {"reason": "test over"}}]})
    )
    (tmp_path / "caller.json").write_text(
        json.dumps({"steps": [{"wait_for_hangup": {"timeout": 20}}]})
    )
    env = {"PATH": os.environ["PATH"]}
    archer = [sys.executable, "-m", "archer"]
    servers = [
        subprocess.Popen(
            [*archer, "emulate", "cartesia", "--port", str(agent_port), "--script", "agent.json"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ),
        subprocess.Popen(
            [*archer, "serve", "--host", "127.0.0.1", "--port", str(archer_port)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ),
    ]  # fmt: skip
    try:
        wait_until_listening(agent_port, servers[0])
        wait_until_listening(archer_port, servers[1])
        call = subprocess.run(
            [
                *archer,
                *("emulate", "call", "--url", f"http://127.0.0.1:{archer_port}"),
                *("--script", "caller.json", "--rest-port", str(rest_port)),
                *("--out", str(tmp_path / "heard.wav")),
            ],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert call.returncode == 0, call.stdout + call.stderr
        assert "ended by archer" in call.stdout
        # The REST emulator's address is announced once (hypercorn's line is not doubled).
        assert call.stdout.count("emulated Twilio REST API on http://127.0.0.1:") == 1
        assert (call.stdout + call.stderr).count("Running on") <= 1
        assert "0 invalid messages" in call.stdout
        assert (tmp_path / "heard.wav").stat().st_size > 8000
        with urllib.request.urlopen(f"http://127.0.0.1:{archer_port}/readyz", timeout=5) as ready:
            assert ready.status == 200
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    with sqlite3.connect(tmp_path / "archer.db") as db:
        [(status, end_reason, frames_out, twilio_status)] = db.execute(
            "SELECT status, end_reason, frames_out, twilio_status FROM calls"
        ).fetchall()
    assert (status, end_reason, twilio_status) == ("completed", "agent_hangup", "completed")
    assert frames_out > 100


def test_the_caller_exits_non_zero_when_the_call_failed(tmp_path: Path) -> None:
    """With no agent to reach, Archer ends the call at once: ``emulate call`` exits 1, saying so."""
    archer_port, nobody, rest_port = free_port(), free_port(), free_port()
    (tmp_path / ".env").write_text(
        "\n".join(
            [
                "WEBHOOK_BASE_URL=https://archer.example.test",
                "TWILIO_ACCOUNT_SID=AC" + "2" * 32,
                "TWILIO_AUTH_TOKEN=failed-call-token",
                f"TWILIO_API_BASE_URL=http://127.0.0.1:{rest_port}",
                "CARTESIA_API_KEY=sk_car_failed_call",
                "CARTESIA_AGENT_ID=agent_nowhere",
                f"CARTESIA_WS_URL=ws://127.0.0.1:{nobody}",
                f"DATABASE_URL=sqlite:///{tmp_path / 'archer.db'}",
            ]
        )
    )
    env = {"PATH": os.environ["PATH"]}
    archer = [sys.executable, "-m", "archer"]
    server = subprocess.Popen(
        [*archer, "serve", "--host", "127.0.0.1", "--port", str(archer_port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until_listening(archer_port, server)
        call = subprocess.run(
            [
                *(*archer, "emulate", "call", "--url", f"http://127.0.0.1:{archer_port}"),
                *("--rest-port", str(rest_port)),
            ],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    assert call.returncode == 1, call.stdout + call.stderr
    assert "not completed" in call.stdout
    with sqlite3.connect(tmp_path / "archer.db") as db:
        [(status, end_reason)] = db.execute("SELECT status, end_reason FROM calls").fetchall()
    # No agent ever answers: the reconnect budget (on by default, issue 16) is spent, the
    # caller hears the apology and, with no HUMAN_AGENT_NUMBER, is hung up on.
    assert (status, end_reason) == ("failed", "agent_lost")
