"""DTMF (touch tones): make them as μ-law audio for Twilio, and find them in μ-law audio.

Layer: pure audio. No I/O, no trio. Twilio Media Streams has no message that sends a DTMF
digit to the caller, so when the agent asks for one (``dtmf_output``) Archer plays the tone as
ordinary ``media``, like a phone's keypad would. Rules:

- Frequencies are ITU-T Q.23's; each digit is one row tone plus one column tone.
- Each component is at -9 dBFS (peak), so their sum peaks at -3 dBFS and never clips in μ-law.
- A 5 ms raised-cosine ramp at both ends of the tone: a tone switched on at full level clicks,
  and the click's broadband energy is what makes other detectors misfire.
- The tone plus its silent gap is a whole number of 20 ms frames, so it goes to Twilio as whole
  frames and whatever is queued after it stays frame-aligned.

The detector (``detect_digits``) checks what the caller actually received, in tests of the
codec and of whole calls. It is a textbook one: each 20 ms block's power at the eight DTMF
frequencies (the Goertzel quantity), and a block holds a digit only if the strongest row and
column tones are each well above the other three of their group, within the allowed twist of each
other, loud enough, and most of the block's energy. A digit is reported once per run of blocks
holding it, so a 100 ms tone is one digit, not five.
"""

from __future__ import annotations

import binascii
from typing import Final

import numpy as np
import numpy.typing as npt

from archer.audio import g711

ROWS: Final = (697, 770, 852, 941)
COLUMNS: Final = (1209, 1336, 1477, 1633)
_KEYPAD: Final = ("123A", "456B", "789C", "*0#D")

#: Digit → (row frequency, column frequency) in Hz, ITU-T Q.23.
DTMF_FREQUENCIES: Final[dict[str, tuple[int, int]]] = {
    key: (row, column)
    for row, keys in zip(ROWS, _KEYPAD, strict=True)
    for column, key in zip(COLUMNS, keys, strict=True)
}

FRAME_MS: Final = 20
_COMPONENT_PEAK: Final = 32767 * 10 ** (-9 / 20)  # -9 dBFS; two of them peak at -3 dBFS
_RAMP_MS: Final = 5

# Detector thresholds. A pure tone's power at a neighbouring row frequency (73 Hz away, under 1.5
# DFT bins of a 20 ms block) leaks in 13 dB down, so 6 dB of dominance leaves margin for noise.
_DOMINANCE: Final = 10 ** (6 / 10)
# Twist: keypads send the column tone up to a few dB louder than the row tone; 8 dB either way.
_TWIST: Final = 10 ** (8 / 10)
# Each tone at least -36 dBFS (peak 520): quieter than that is line noise, not a keypress.
_MIN_POWER: Final = (32767 * 10 ** (-36 / 20)) ** 2 / 2
# The two tones must carry most of the block's energy: voiced speech spreads its energy over many
# harmonics and formants, so this is what keeps it from passing for a digit. Over every speech
# clip at several levels and block offsets, two consecutive blocks never both passed the other
# checks for one digit with more than 0.53 of their energy in its tones; our tones put ~1.0 there,
# and still pass 0.7 with speech 11 dB below them mixed in.
_TONE_SHARE: Final = 0.7
# A digit must hold for two blocks (40 ms, the ITU minimum) and ends after two blocks without it,
# so one noisy block neither invents a digit nor splits one into two.
_MIN_ON: Final = 2
_MIN_OFF: Final = 2


def dtmf_tone(
    digit: str, *, tone_ms: int = 100, gap_ms: int = 100, sample_rate: int = 8000
) -> bytes:
    """The DTMF tone for ``digit`` followed by silence, as μ-law bytes at ``sample_rate``.

    The gap is lengthened so the total is a whole number of 20 ms frames.

    Raises:
        ValueError: ``digit`` is not one of 0-9, *, #, A-D, or a duration is out of range.
    """
    frequencies = DTMF_FREQUENCIES.get(digit.upper()) if len(digit) == 1 else None
    if frequencies is None:
        raise ValueError(f"not a DTMF digit: {digit!r} (expected one of 0-9 * # A-D)")
    if tone_ms <= 0 or gap_ms < 0:
        raise ValueError(f"tone_ms must be > 0 and gap_ms >= 0, not {tone_ms} and {gap_ms}")
    frame = sample_rate * FRAME_MS // 1000
    tone_len = sample_rate * tone_ms // 1000
    total = -(-(tone_len + sample_rate * gap_ms // 1000) // frame) * frame  # round up to frames
    t = np.arange(tone_len) / sample_rate
    tone = _COMPONENT_PEAK * (
        np.sin(2 * np.pi * frequencies[0] * t) + np.sin(2 * np.pi * frequencies[1] * t)
    )
    ramp_len = min(sample_rate * _RAMP_MS // 1000, tone_len // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_len) / ramp_len)
    tone[:ramp_len] *= ramp
    tone[tone_len - ramp_len :] *= ramp[::-1]
    samples = np.zeros(total, dtype=np.int16)
    samples[:tone_len] = np.round(tone)
    return g711.encode_samples(samples)


def dtmf_tone_frames(digit: str) -> list[str]:
    """``dtmf_tone(digit)`` cut into 20 ms frames of base64 μ-law at 8 kHz, as Twilio plays them.

    Twilio's media stream has no outbound DTMF message, so a key the agent presses reaches the
    caller as these tones, queued like any other agent audio.

    Raises:
        ValueError: ``digit`` is not one of 0-9, *, #, A-D.
    """
    tone = dtmf_tone(digit)
    frame = 8000 * FRAME_MS // 1000
    return [
        binascii.b2a_base64(tone[start : start + frame], newline=False).decode("ascii")
        for start in range(0, len(tone), frame)
    ]


def goertzel_power(
    samples: npt.NDArray[np.integer] | npt.NDArray[np.floating], frequency: float, sample_rate: int
) -> float:
    """The power of ``samples`` at ``frequency``, in the units of their mean square.

    This is what the Goertzel recurrence computes (one DFT term at any frequency, not only at a
    bin), taken as one dot product because numpy does that faster than a Python loop. A sine of
    amplitude A at ``frequency`` filling the block gives A²/2, its mean square.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return 0.0
    term = np.dot(x, np.exp(-2j * np.pi * frequency * np.arange(x.size) / sample_rate))
    return 2.0 * abs(complex(term)) ** 2 / x.size**2


def detect_digits(ulaw: bytes, *, sample_rate: int = 8000) -> str:
    """The DTMF digits in μ-law audio, in order, each once per tone (see the module notes)."""
    block = sample_rate * FRAME_MS // 1000
    count = len(ulaw) // block
    if count == 0:
        return ""
    blocks = g711.decode_samples(ulaw[: count * block]).reshape(count, block).astype(np.float64)
    frequencies = np.array(ROWS + COLUMNS, dtype=np.float64)
    basis = np.exp(-2j * np.pi * np.outer(np.arange(block), frequencies) / sample_rate)
    power = 2.0 * np.abs(blocks @ basis) ** 2 / block**2  # goertzel_power, all blocks at once
    energy = np.mean(blocks**2, axis=1)
    return _runs([_block_digit(p[:4], p[4:], e) for p, e in zip(power, energy, strict=True)])


def _block_digit(
    rows: npt.NDArray[np.float64], columns: npt.NDArray[np.float64], energy: float
) -> str | None:
    row, column = int(np.argmax(rows)), int(np.argmax(columns))
    row_power, column_power = rows[row], columns[column]
    if min(row_power, column_power) < _MIN_POWER:
        return None
    if np.any(np.delete(rows, row) * _DOMINANCE > row_power):
        return None
    if np.any(np.delete(columns, column) * _DOMINANCE > column_power):
        return None
    if not 1 / _TWIST <= row_power / column_power <= _TWIST:
        return None
    if row_power + column_power < _TONE_SHARE * energy:
        return None
    return _KEYPAD[row][column]


def _runs(block_digits: list[str | None]) -> str:
    found: list[str] = []
    current: str | None = None  # the digit of the run being reported, once reported
    candidate: str | None = None
    seen = missed = 0
    for digit in block_digits:
        seen = seen + 1 if digit == candidate else 1
        candidate = digit
        if digit is not None and digit != current and seen >= _MIN_ON:
            found.append(digit)
            current, missed = digit, 0
        elif current is not None and digit != current:
            missed += 1
            if missed >= _MIN_OFF:
                current = None
        else:
            missed = 0
    return "".join(found)
