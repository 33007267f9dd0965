"""``archer demo`` end to end: both emulators, Archer, a seeded SQLite bank, in real time.

Slow by design (the scripted calls last about 40 and 25 seconds): this is the newcomer's first
command, so CI runs it exactly as they will, and checks what its checks check.
"""

from __future__ import annotations

from pathlib import Path

from archer.audio.clips import speech_clip
from archer.demo import run_demo


def _played(heard: bytes, clip: str, *, part: slice) -> bool:
    """True if that part of the clip reached the caller's ear byte for byte (μ-law passthrough)."""
    return speech_clip(clip)[part] in heard


async def test_the_demo_call_is_complete_and_correct(tmp_path: Path) -> None:
    """The call leaves a correct record; the caller heard the answer cut at the barge-in."""
    lines: list[str] = []
    result = await run_demo(transfer=False, workdir=tmp_path, progress=lines.append)
    assert result.problems == ()
    assert result.card_status == "frozen"
    heard = result.outcome.heard
    assert _played(heard, "agent_greeting", part=slice(0, 800))
    assert _played(heard, "agent_balance", part=slice(0, 800))
    # The balance answer was interrupted: its end never reached the caller.
    assert not _played(heard, "agent_balance", part=slice(-8000, None))
    assert _played(heard, "agent_goodbye", part=slice(0, 800))
    assert any("barge-in" in line for line in lines)


async def test_the_transfer_demo_ends_with_the_human(tmp_path: Path) -> None:
    """The ``--transfer`` variant ends ``transferred`` with <Dial> to the human agent's number."""
    result = await run_demo(transfer=True, workdir=tmp_path, progress=lambda line: None)
    assert result.problems == ()
    assert result.stored is not None
    assert result.stored.record.end_reason == "transferred"
    assert result.card_status == "active"
