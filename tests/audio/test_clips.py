"""Speech clips: every committed clip is real 8 kHz μ-law speech saying its text."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import numpy as np
import pytest

from archer.audio import g711
from archer.audio.clips import CLIP_NAMES, SAMPLE_RATE, clip_text, speech_clip
from archer.audio.wav import read_wav

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_speech_clips.sh"
SPEECH = importlib.resources.files("archer") / "data" / "speech"


@pytest.mark.parametrize("name", sorted(CLIP_NAMES))
def test_clip_file_is_8khz_mulaw(name: str) -> None:
    """Each clip's file is 8 kHz μ-law, and speech_clip returns exactly its data."""
    with importlib.resources.as_file(SPEECH / f"{name}.wav") as path:
        audio = read_wav(path)
    assert audio.encoding == "mulaw"
    assert audio.sample_rate == SAMPLE_RATE == 8000
    assert speech_clip(name) == audio.data


@pytest.mark.parametrize("name", sorted(CLIP_NAMES))
def test_clip_length_fits_its_text(name: str) -> None:
    """Each clip lasts 1-30 s and is spoken at 2-4 words a second: whole, not cut or stretched."""
    seconds = len(speech_clip(name)) / SAMPLE_RATE
    words = len(clip_text(name).split())
    # The balance read-out is 69 words, 23 s at the agent voice's 165 words a minute.
    assert 1.0 <= seconds <= 30.0
    assert 2.0 <= words / seconds <= 4.0


@pytest.mark.parametrize("name", sorted(CLIP_NAMES))
def test_clip_is_not_silent(name: str) -> None:
    """Each clip's RMS level is well above zero (speech, not silence or hiss)."""
    samples = g711.decode_samples(speech_clip(name)).astype(np.float64)
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 1000  # about -30 dBFS; espeak-ng speech through sox measures ~3000
    assert float(np.max(np.abs(samples))) > 10_000


@pytest.mark.parametrize("name", sorted(CLIP_NAMES))
def test_clip_is_trimmed(name: str) -> None:
    """No clip starts or ends with more than 50 ms of near-silence (pacing belongs to scripts)."""
    samples = np.abs(g711.decode_samples(speech_clip(name)).astype(np.int32))
    loud = np.flatnonzero(samples > 0.01 * 32768)  # sox's silence threshold: 1%
    assert loud[0] <= 0.05 * SAMPLE_RATE
    assert len(samples) - 1 - loud[-1] <= 0.05 * SAMPLE_RATE


def test_script_speaks_every_text_verbatim() -> None:
    """make_speech_clips.sh names every clip with exactly the text clip_text returns."""
    script = SCRIPT.read_text(encoding="utf-8")
    for name in CLIP_NAMES:
        assert f' {name} "{clip_text(name)}"\n' in script, name
    spoken = set(re.findall(r"^(?:agent|caller) (\w+) ", script, flags=re.MULTILINE))
    assert spoken == CLIP_NAMES


def test_packaged_files_are_exactly_the_clips() -> None:
    """archer/data/speech holds one WAV per clip name and nothing else."""
    assert {entry.name for entry in SPEECH.iterdir()} == {f"{name}.wav" for name in CLIP_NAMES}


def test_unknown_clip_names_the_known_ones() -> None:
    """An unknown name raises KeyError listing the clips that exist."""
    known = re.escape(", ".join(sorted(CLIP_NAMES)))
    with pytest.raises(KeyError, match=f"'agent_hello'; known clips: {known}"):
        speech_clip("agent_hello")
    with pytest.raises(KeyError, match="unknown speech clip 'nope'"):
        clip_text("nope")
