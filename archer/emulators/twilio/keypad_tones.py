"""What a caller's keypad puts into the line's audio when it sends keys in band.

Layer: emulator, pure (numpy, no trio, no I/O). Twilio reports a key on a bidirectional stream
as a ``dtmf`` message (../shared/reference/twilio-media-streams.md §3.2); its documents do not
say whether the inbound ``media`` still carries the tone. A caller whose phone or line sends
keys in band would put the tone in the audio, so the emulated caller can do that too
(``EmulatedCaller(in_band_tones=True)``): each key is then both a ``dtmf`` message and its
tone in the caller's ``media``.

Rule: written from ITU-T Q.23 (the keypad's frequencies) and ITU-T G.711 (μ-law), never from
Archer's ``archer.audio.dtmf`` or ``archer.audio.g711``, so a test that drives Archer with these
tones notices when Archer's detector and a real keypad disagree. What it follows:

- Each key is one tone from the low group (rows) plus one from the high group (columns).
- The high tone is ``TWIST_DB`` louder than the low one, as keypads send them (they make up for
  the line's loss at higher frequencies); both together stay below full scale.
- ``TONE_MS`` of tone, like a short keypress (Q.24 asks a receiver to take 40 ms).
- The tone starts ``ONSET_SAMPLES`` into a 20 ms frame, not on its boundary: a key is pressed
  whenever the caller presses it, so its tone straddles frames.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["ONSET_SAMPLES", "TONE_MS", "keypad_tone", "ulaw_encode"]

#: ITU-T Q.23: the low (row) and high (column) group frequencies, in Hz, and the keys.
_LOW_GROUP: Final = (697, 770, 852, 941)
_HIGH_GROUP: Final = (1209, 1336, 1477, 1633)
_KEYS: Final = ("123A", "456B", "789C", "*0#D")

SAMPLE_RATE: Final = 8000
#: How long each key's tone lasts.
TONE_MS: Final = 100
#: Silence before the tone, in samples, so its start falls inside a 20 ms frame.
ONSET_SAMPLES: Final = 52
#: The low-group tone's peak, dBFS, and how much louder the high-group tone is.
LOW_LEVEL_DBFS: Final = -10.0
TWIST_DB: Final = 2.0

# G.711 μ-law: the bias added before taking the segment, and the largest magnitude encoded.
_BIAS: Final = 0x84
_CLIP: Final = 32635


def _frequencies(key: str) -> tuple[int, int]:
    for low, row in zip(_LOW_GROUP, _KEYS, strict=True):
        if key in row:
            return low, _HIGH_GROUP[row.index(key)]
    raise ValueError(f"not a keypad key: {key!r}")


def keypad_tone(key: str, *, tone_ms: int = TONE_MS, onset_samples: int = ONSET_SAMPLES) -> bytes:
    """``key``'s tone as 8 kHz μ-law: ``onset_samples`` of silence, then ``tone_ms`` of tone.

    Raises:
        ValueError: ``key`` is not one of 0-9, ``*``, ``#``, A-D.
    """
    low, high = _frequencies(key)
    t = np.arange(SAMPLE_RATE * tone_ms // 1000) / SAMPLE_RATE
    amplitude = 32767 * 10 ** (LOW_LEVEL_DBFS / 20)
    tone = amplitude * (
        np.sin(2 * np.pi * low * t) + 10 ** (TWIST_DB / 20) * np.sin(2 * np.pi * high * t)
    )
    samples = np.concatenate([np.zeros(onset_samples), tone])
    return ulaw_encode(np.round(samples).astype(np.int32))


def ulaw_encode(samples: npt.NDArray[np.integer]) -> bytes:
    """16-bit linear samples → G.711 μ-law bytes (sign, 3-bit segment, 4-bit step, inverted)."""
    linear = np.asarray(samples, dtype=np.int32)
    sign = np.where(linear < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(linear), _CLIP) + _BIAS
    # The segment is the position of the magnitude's top bit above bit 7 (magnitude ≥ 0x84).
    segment = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    step = (magnitude >> (segment + 3)) & 0x0F
    encoded = ~(sign | (segment << 4) | step) & 0xFF
    return bytes(encoded.astype(np.uint8))
