"""Small helpers shared by the test tiers."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import trio

#: Packages whose tasks belong to a call; the server's own long-lived tasks are not listed.
CALL_TASK_PREFIXES = ("archer.call.", "archer.cartesia.", "archer.twilio.", "archer.web.")


def live_archer_tasks() -> list[str]:
    """Names of every running trio task that belongs to a call (should be none between calls)."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                names.append(child.name)
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return [name for name in names if name.startswith(CALL_TASK_PREFIXES)]


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
