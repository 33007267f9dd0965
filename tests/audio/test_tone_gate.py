"""The per-frame keypad tone check and the gate that silences tones (issue 21).

Tones are synthesised here from ITU-T Q.23's frequencies (not by ``archer.audio.dtmf``), at
several levels, twists and frequency errors; speech is every packaged clip.
"""

from __future__ import annotations

import base64

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archer.audio import g711
from archer.audio.clips import CLIP_NAMES, speech_clip
from archer.audio.dtmf import detect_digits
from archer.audio.tone_gate import (
    FRAME_SAMPLES,
    FULL_DETECTION_SAMPLES,
    HANGOVER_FRAMES,
    ToneGate,
    frame_has_tone,
    frame_tone,
)

N = FRAME_SAMPLES
ROWS = (697, 770, 852, 941)
COLUMNS = (1209, 1336, 1477, 1633)
KEYS = {
    key: (row, column)
    for row, keys in zip(ROWS, ("123A", "456B", "789C", "*0#D"), strict=True)
    for column, key in zip(COLUMNS, keys, strict=True)
}
SILENCE = bytes([0xFF]) * N
#: The louder component's peak, dBFS; the other is up to 8 dB quieter (down to -38 dBFS).
LEVELS = (-8, -16, -24, -30)
TWISTS = (-8, -4, 0, 4, 8)


def tone(
    key: str,
    samples: int,
    *,
    level_db: float = -10,
    twist_db: float = 2,
    error: float = 0.0,
    phase: float = 0.3,
) -> npt.NDArray[np.float64]:
    """Linear samples of ``key``: the column tone ``twist_db`` above the row tone, the louder
    at ``level_db``; both frequencies off by the fraction ``error``."""
    row, column = KEYS[key]
    t = np.arange(samples) / 8000
    louder = 32767 * 10 ** (level_db / 20)
    row_amplitude = louder * 10 ** (-max(twist_db, 0) / 20)
    column_amplitude = louder * 10 ** (min(twist_db, 0) / 20)
    return row_amplitude * np.sin(
        2 * np.pi * row * (1 + error) * t + phase
    ) + column_amplitude * np.sin(2 * np.pi * column * (1 + error) * t + 1.1)


def ulaw(samples: npt.NDArray[np.float64]) -> bytes:
    return g711.encode_samples(np.clip(np.round(samples), -32768, 32767).astype(np.int16))


def frames_of(audio: bytes, offset: int = 0) -> list[bytes]:
    audio = audio[offset:]
    return [audio[i : i + N] for i in range(0, len(audio) - N + 1, N)]


def b64(frame: bytes) -> str:
    return base64.b64encode(frame).decode()


@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_key_is_found_at_every_level_twist_and_frequency_error(key: str) -> None:
    """A frame the tone covers: found, and as the right key, at 4 levels x 5 twists x 3 errors
    (Q.24 lets a keypad be 1.5 % off)."""
    for level in LEVELS:
        for twist in TWISTS:
            for error in (-0.015, 0.0, 0.015):
                frame = ulaw(tone(key, N, level_db=level, twist_db=twist, error=error))
                assert frame_tone(frame) == key, (level, twist, error)


@pytest.mark.parametrize("key", sorted(KEYS))
def test_a_tone_covering_most_of_a_frame_is_found(key: str) -> None:
    for level in LEVELS:
        for twist in TWISTS:
            for start in (0, N - FULL_DETECTION_SAMPLES):
                samples = np.zeros(N)
                samples[N - FULL_DETECTION_SAMPLES - start :][:FULL_DETECTION_SAMPLES] = tone(
                    key, FULL_DETECTION_SAMPLES, level_db=level, twist_db=twist
                )
                assert frame_tone(ulaw(samples)) == key, (level, twist, start)


def test_silence_and_noise_are_not_tones() -> None:
    rng = np.random.default_rng(21)
    assert not frame_has_tone(SILENCE)
    assert not frame_has_tone(bytes([0x7F]) * N)  # the other μ-law zero
    assert not frame_has_tone(b"")
    for level_db in (-50, -30, -20, -10, -3):
        for _ in range(200):
            noise = rng.normal(0, 32767 * 10 ** (level_db / 20) / 3, N)
            assert not frame_has_tone(ulaw(noise)), level_db


def test_no_speech_frame_is_taken_for_a_tone() -> None:
    """Every packaged clip, at four levels and four frame alignments (72,144 frames with the
    clips of December 2026), none taken for a tone (the rate the module docstring states)."""
    checked = taken = 0
    for name in sorted(CLIP_NAMES):
        speech = g711.decode_samples(speech_clip(name)).astype(np.float64)
        for gain_db in (6, 0, -6, -12):
            clip = ulaw(speech * 10 ** (gain_db / 20))
            for offset in range(0, N, 40):
                for frame in frames_of(clip, offset):
                    checked += 1
                    taken += frame_has_tone(frame)
    assert checked > 50_000, "the clips are the check's evidence: they must all be read"
    assert taken == 0


def test_a_tone_straddling_frames_does_not_leak_its_edges() -> None:
    """A 100 ms tone starting mid-frame between two pieces of speech: what the gate lets
    through holds no digit and no more of the tone than the part of its first frame."""
    speech = speech_clip("caller_balance")[8000:9600]  # 200 ms of speech
    for onset in (20, 52, 80, 120):
        gate = ToneGate()
        audio = speech + ulaw(np.concatenate([np.zeros(onset), tone("7", 800)])) + speech
        audio = audio[: len(audio) // N * N]
        passed = b""
        silenced = 0
        for frame in frames_of(audio):
            if gate.blocks(b64(frame)):
                silenced += 1
                passed += SILENCE
            else:
                passed += frame
        assert detect_digits(audio) == "7"  # the tone is there to be found ...
        assert detect_digits(passed) == ""  # ... and the agent's audio has none of it
        # Speech before the tone and after the hangover goes through untouched.
        assert passed[: len(speech) // N * N] == audio[: len(speech) // N * N]
        assert passed[-N:] == audio[-N:]
        tone_frames = -(-(onset + 800) // N) - onset // N  # frames holding any of the tone
        assert tone_frames - 1 <= silenced <= tone_frames + HANGOVER_FRAMES


def test_the_gate_silences_the_hangover_then_lets_speech_through() -> None:
    gate = ToneGate()
    speech = frames_of(speech_clip("caller_balance")[8000:])[:6]
    assert [gate.blocks(b64(frame)) for frame in speech[:2]] == [False, False]
    key = ulaw(tone("#", N))
    assert gate.blocks(b64(key))
    assert [gate.blocks(b64(frame)) for frame in speech[2:]] == [True] * HANGOVER_FRAMES + [
        False
    ] * (4 - HANGOVER_FRAMES)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(sorted(KEYS)),
    level_db=st.floats(-45, -6),
    twist_db=st.floats(-12, 12),
    covered=st.integers(0, N),
    speech_at=st.integers(0, 30_000),
    speech_db=st.floats(-40, 0),
)
def test_whatever_detect_digits_would_find_the_gate_silences(
    key: str, level_db: float, twist_db: float, covered: int, speech_at: int, speech_db: float
) -> None:
    """The gate is at least as lenient as the detector the tests check the agent's audio with:
    a frame ``detect_digits`` takes for a digit (held for two blocks) is a frame the gate
    stops, here for partial tones with speech mixed in."""
    speech = g711.decode_samples(speech_clip("caller_freeze")[speech_at : speech_at + N])
    samples = speech.astype(np.float64) * 10 ** (speech_db / 20)
    samples[N - covered :] += tone(key, covered, level_db=level_db, twist_db=twist_db)
    frame = ulaw(samples)
    if detect_digits(frame * 2):
        assert frame_has_tone(frame)
