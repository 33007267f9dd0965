"""The playout buffer model: drain timing, marks, clear, and the caller's heard timeline."""

from __future__ import annotations

import pytest

from archer.emulators.twilio.playout import PlayoutBuffer, Tick

SILENCE = b"\xff"


def test_an_empty_buffer_plays_silence() -> None:
    """With nothing queued every tick is exactly 8 bytes per ms of μ-law silence."""
    buffer = PlayoutBuffer()
    assert buffer.tick(20) == Tick(heard=SILENCE * 160, echoed=[], played=0)
    assert buffer.tick(0) == Tick(heard=b"", echoed=[], played=0)
    assert (buffer.queued_bytes, buffer.playing) == (0, False)


def test_audio_drains_at_8_bytes_per_ms_then_silence_pads() -> None:
    """Queued audio plays in order at 8 bytes per ms; the tick that runs dry is padded."""
    buffer = PlayoutBuffer()
    buffer.append(b"\x01" * 100)
    buffer.append(b"\x02" * 150)
    assert (buffer.queued_bytes, buffer.playing) == (250, True)
    first = buffer.tick(20)
    assert first.heard == b"\x01" * 100 + b"\x02" * 60
    assert first.played == 160
    second = buffer.tick(20)
    assert second.heard == b"\x02" * 90 + SILENCE * 70
    assert second.played == 90
    assert (buffer.queued_bytes, buffer.playing) == (0, False)


def test_the_heard_timeline_is_real_time() -> None:
    """Concatenated ticks are 8 bytes per elapsed ms: silence, the audio, silence."""
    buffer = PlayoutBuffer()
    heard = buffer.tick(20).heard
    buffer.append(b"\x10" * 400)
    for _ in range(4):
        heard += buffer.tick(20).heard
    assert len(heard) == 8 * 100
    assert heard == SILENCE * 160 + b"\x10" * 400 + SILENCE * 240


def test_marks_echo_when_the_drain_passes_them_in_order() -> None:
    """Each mark comes back on the tick that plays the last byte queued before it."""
    buffer = PlayoutBuffer()
    buffer.append(b"\x01" * 160)
    buffer.mark("a")
    buffer.append(b"\x02" * 200)
    buffer.mark("b")
    buffer.mark("c")
    assert buffer.pending_marks == ["a", "b", "c"]
    assert buffer.tick(10).echoed == []
    assert buffer.tick(10).echoed == ["a"]
    assert buffer.tick(20).echoed == []
    assert buffer.tick(20).echoed == ["b", "c"]
    assert buffer.pending_marks == []


def test_a_mark_on_an_empty_buffer_echoes_at_the_next_tick() -> None:
    """Nothing queued: the mark is echoed by the very next tick, however short."""
    buffer = PlayoutBuffer()
    buffer.mark("now")
    assert buffer.pending_marks == ["now"]
    assert buffer.tick(0).echoed == ["now"]
    buffer.append(b"\x01" * 8)
    buffer.tick(1)
    buffer.mark("after")
    assert buffer.tick(20).echoed == ["after"]


def test_clear_drops_the_audio_and_returns_every_pending_mark() -> None:
    """``clear`` empties the buffer and hands back all pending marks, which then never echo."""
    buffer = PlayoutBuffer()
    buffer.append(b"\x01" * 160)
    buffer.mark("first")
    buffer.append(b"\x02" * 1600)
    buffer.mark("second")
    buffer.tick(20)
    buffer.mark("third")
    assert buffer.clear() == ["second", "third"]
    assert (buffer.queued_bytes, buffer.playing, buffer.pending_marks) == (0, False, [])
    after = buffer.tick(20)
    assert after == Tick(heard=SILENCE * 160, echoed=[], played=0)
    # New audio after the clear plays, and its marks still work.
    buffer.append(b"\x03" * 80)
    buffer.mark("fourth")
    assert buffer.tick(20) == Tick(heard=b"\x03" * 80 + SILENCE * 80, echoed=["fourth"], played=80)


def test_the_first_mark_is_echoed_before_the_clear() -> None:
    """A mark already passed by the drain is not returned again by a later clear."""
    buffer = PlayoutBuffer()
    buffer.append(b"\x01" * 160)
    buffer.mark("played")
    assert buffer.tick(20).echoed == ["played"]
    assert buffer.clear() == []


def test_a_negative_tick_is_refused() -> None:
    """Time only moves forward."""
    with pytest.raises(ValueError, match="-1 ms"):
        PlayoutBuffer().tick(-1)
