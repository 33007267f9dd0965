"""Small helpers shared by the test tiers."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import trio

#: The five settings ``archer serve`` needs, for tests that start it as a process.
SERVING_ENV = {
    "WEBHOOK_BASE_URL": "https://archer.bank.test",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "twilio-secret-token",
    "CARTESIA_API_KEY": "sk_car_secret_key",
    "CARTESIA_AGENT_ID": "agent_123",
}
#: Packages whose tasks belong to a call; the server's own long-lived tasks are not listed.
CALL_TASK_PREFIXES = ("archer.call.", "archer.cartesia.", "archer.twilio.", "archer.web.")
#: Server tasks under those prefixes that live as long as the server, not a call.
SERVER_TASKS = frozenset({"archer.web.media_listener.serve_media_listener"})


def run_archer(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m archer *args`` to completion, with only ``env`` (and PATH) set."""
    return subprocess.run(
        [sys.executable, "-m", "archer", *args],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def live_archer_tasks() -> list[str]:
    """Names of every running trio task that belongs to a call (should be none between calls)."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                names.append(child.name)
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return [
        name for name in names if name.startswith(CALL_TASK_PREFIXES) and name not in SERVER_TASKS
    ]


def audio(tag: int, size: int = 160) -> str:
    """A distinct base64 payload of ``size`` μ-law bytes, recognisable by ``tag``."""
    return base64.b64encode(bytes([tag % 256]) * size).decode()


async def eventually(check: Callable[[], Awaitable[bool]], *, interval: float = 0.05) -> None:
    """Poll ``check`` until it holds (for state outside trio's reach: files, other processes).

    Callers bound the wait with ``trio.fail_after``.
    """
    while True:
        if await check():
            return
        await trio.sleep(interval)


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts as another process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def similarity(received: np.ndarray, reference: np.ndarray) -> float:
    """Normalised cross-correlation of two signals at the best lag (resamplers delay audio)."""
    a, b = received.astype(np.float64), reference.astype(np.float64)
    size = len(a) + len(b)
    correlation = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lag = int(np.argmax(correlation[: len(a)]))
    window = a[lag : lag + len(b)]
    overlap = b[: len(window)]
    return float(np.dot(window, overlap) / (np.linalg.norm(window) * np.linalg.norm(overlap)))
