"""``archer demo`` end to end: both emulators, Archer, a seeded SQLite bank, in real time.

Slow by design (the scripted calls last about 40 and 25 seconds), on both Cartesia protocols:
this is the newcomer's first command, so CI runs it exactly as they will. Between them the runs
cover audio both ways, the barge-in and clear, DTMF, tools (client tools on Managed, ``custom``
events on Line), the agent hanging up, the transfer, and the record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from archer.audio.clips import speech_clip
from archer.call.playback import MARK_INTERVAL_MS
from archer.demo import run_demo
from archer.demo_outbound import format_outbound, run_outbound_demo


def _leading_frames_heard(heard: bytes, clip: str) -> int:
    """How many of the clip's 20 ms frames, from its start, reached the caller."""
    audio = speech_clip(clip)
    count = 0
    while count * 160 < len(audio) and audio[count * 160 : (count + 1) * 160] in heard:
        count += 1
    return count


def _played(heard: bytes, clip: str, *, part: slice) -> bool:
    """True if that part of the clip reached the caller's ear (μ-law passthrough keeps bytes).

    Judged by whole 20 ms frames, at least 80% of them: on a loaded machine Twilio's playout
    buffer may run dry between two frames and play a silent tick, which splits the audio
    without losing any of it.
    """
    audio = speech_clip(clip)[part]
    frames = [audio[i : i + 160] for i in range(0, len(audio) - 159, 160)]
    return sum(frame in heard for frame in frames) >= 0.8 * len(frames)


@pytest.mark.parametrize("protocol", ["managed", "line"])
async def test_the_demo_call_is_complete_and_correct(tmp_path: Path, protocol: str) -> None:
    """The call leaves a correct record; the caller heard the answer cut at the barge-in."""
    lines: list[str] = []
    result = await run_demo(
        transfer=False, workdir=tmp_path, progress=lines.append, protocol=protocol
    )
    assert result.problems == ()
    assert result.card_status == "frozen"
    heard = result.outcome.heard
    assert _played(heard, "agent_greeting", part=slice(0, 1600))
    assert _played(heard, "agent_balance", part=slice(0, 1600))
    # The balance answer was interrupted: its last second never reached the caller.
    balance = speech_clip("agent_balance")
    last_second = [
        balance[i : i + 160] for i in range(len(balance) - 8000, len(balance) - 159, 160)
    ]
    assert not any(frame in heard for frame in last_second)
    assert _played(heard, "agent_goodbye", part=slice(0, 1600))
    assert any("barge-in" in line for line in lines)
    assert result.outcome.clears_received >= 1
    if protocol == "line":
        return  # Line agents report no turns: there is no per-turn heard_ms to compare
    # What the record says the caller heard of the interrupted answer is what the emulated
    # playout buffer played, to within one progress mark (100 ms) and one frame.
    assert result.stored is not None
    [cut] = [t for t in result.stored.record.turns if t.role == "assistant" and t.interrupted]
    played_ms = _leading_frames_heard(heard, "agent_balance") * 20
    assert cut.heard_ms is not None
    assert 0 <= played_ms - cut.heard_ms <= MARK_INTERVAL_MS + 20, (played_ms, cut.heard_ms)
    assert played_ms > 1000  # the caller did hear the start of the answer


@pytest.mark.parametrize("protocol", ["managed", "line"])
async def test_the_transfer_demo_ends_with_the_human(tmp_path: Path, protocol: str) -> None:
    """The ``--transfer`` variant ends ``transferred`` with <Dial> to the human agent's number
    (a Managed agent's transfer_to_human tool; a Line agent's transfer_call)."""
    result = await run_demo(
        transfer=True, workdir=tmp_path, progress=lambda line: None, protocol=protocol
    )
    assert result.problems == ()
    assert result.stored is not None
    assert result.stored.record.end_reason == "transferred"
    assert result.card_status == "active"


@pytest.mark.parametrize("protocol", ["managed", "line"])
async def test_the_outbound_demo_freezes_the_card_and_records_the_dispute(
    tmp_path: Path, protocol: str
) -> None:
    """``archer demo --outbound``: the fraud alert ends with the paying card frozen, the
    dispute recorded, no digit at the agent and the request completed by a person."""
    lines: list[str] = []
    result = await run_outbound_demo(workdir=tmp_path, progress=lines.append, protocol=protocol)
    assert result.problems == (), "\n".join(lines)
    assert result.view is not None
    assert (result.view.status, result.view.answered_by) == ("completed", "human")
    assert result.card_statuses["2207"] == "frozen"
    assert result.card_statuses["9904"] == "active"
    assert [r[0] for r in result.reviews] == [result.transaction_id]
    assert result.agent_digits == 0
    assert result.session_start["merchant"] == "Blue Bottle Coffee"
    assert any("caller presses 1234#" in line for line in lines)
    text = format_outbound(result)
    assert 'collect_pin({}) → {"verified":true}' in text
    assert "review_transaction(" in text
