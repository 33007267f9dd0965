"""The emulated caller's in-band keypad tones (issue 21): Q.23 keys, G.711 μ-law."""

from __future__ import annotations

import numpy as np
import pytest

from archer.audio import g711
from archer.audio.dtmf import detect_digits
from archer.emulators.twilio.keypad_tones import ONSET_SAMPLES, TONE_MS, keypad_tone, ulaw_encode


def test_every_key_is_a_tone_a_detector_reads_back() -> None:
    keys = "0123456789*#ABCD"
    line = b"".join(keypad_tone(key) + bytes([0xFF]) * 800 for key in keys)
    assert detect_digits(line) == keys


def test_the_tone_starts_inside_a_frame_and_lasts_tone_ms() -> None:
    tone = keypad_tone("5")
    assert len(tone) == ONSET_SAMPLES + 8 * TONE_MS
    assert set(tone[:ONSET_SAMPLES]) == {0xFF}  # μ-law silence, then the tone
    assert 0 < ONSET_SAMPLES % 160 < 160


def test_mu_law_encoding_decodes_to_within_one_step() -> None:
    """Checked against Archer's decoder: every 16-bit value comes back within its segment's
    step (the two encoders round a handful of segment edges differently)."""
    samples = np.arange(-32768, 32768, dtype=np.int32)
    decoded = g711.decode_samples(ulaw_encode(samples)).astype(np.int32)
    step = 2 ** (np.floor(np.log2(np.minimum(np.abs(samples), 32635) + 0x84)) - 7 + 3)
    assert np.all(np.abs(decoded - np.clip(samples, -32635, 32635)) <= step)
    assert ulaw_encode(np.array([0, 32767, -32768])) == bytes([0xFF, 0x80, 0x00])


def test_a_key_that_is_not_on_a_keypad_is_refused() -> None:
    with pytest.raises(ValueError, match="not a keypad key"):
        keypad_tone("E")
