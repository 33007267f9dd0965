"""Keypad tones inside the caller's audio: a per-frame check, and the gate that silences them.

Layer: pure audio. No I/O, no trio. Twilio's documents describe a keypress on a bidirectional
stream only as a ``dtmf`` message; they do not say whether the inbound audio still carries the
tone (it does whenever a caller's phone or line sends keys in band rather than as RFC 4733
events). So while digits are withheld from the agent (``DTMF_TO_AGENT=false``), the caller →
agent forwarder asks ``ToneGate.blocks`` about every caller frame and sends silence instead of a
frame that carries a tone. This runs on every caller frame of such a call, so it is written for
the hot path: one table lookup decodes the μ-law, one matrix product gives the power at every
DTMF frequency, and silence (the commonest frame) is answered from its energy alone.

Rules:
- A frame carries a tone when, as in ``archer.audio.dtmf.detect_digits``, its strongest row and
  column tones are each well above the other three of their group, within the allowed twist of
  each other, loud enough, and most of the frame's energy. Unlike ``detect_digits`` the check
  decides from one frame (it cannot wait for the next without delaying every frame), and each
  threshold is ``detect_digits``'s or a more lenient one (a test checks that any frame
  ``detect_digits`` would take, this takes): a miss leaks a tone, a false alarm only costs the
  agent 20 ms of the caller's speech.
- The power at each DTMF frequency is the largest of three probes, at the nominal frequency and
  ``PROBE_SPREAD`` either side, so a keypad off by the 1.5 % ITU-T Q.24 allows still counts:
  one 20 ms block's response falls off within ±25 Hz of its frequency.
- A tone covering most of a frame is caught (every digit, at every level and twist the tests
  try, once it covers ``FULL_DETECTION_SAMPLES`` of the 160 samples). The frame in which a tone
  *starts* may hold too little of it to be caught, and it has already gone to the agent by the
  time the next frame shows the tone: at most that part of one frame (under 20 ms, less than
  the 40 ms a DTMF receiver needs to take a digit) can reach the agent. The tone's *end* is
  covered by ``HANGOVER_FRAMES``.

Measured (``tests/audio/test_tone_gate.py``): over every packaged speech clip, at four levels
and four frame alignments (72,144 frames), no speech frame was taken for a tone.
"""

from __future__ import annotations

import binascii
import functools
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from archer.audio import g711
from archer.audio.dtmf import COLUMNS, ROWS

_SAMPLE_RATE: Final = 8000
#: Twilio's frame: 20 ms of μ-law at 8 kHz.
FRAME_SAMPLES: Final = 160
#: Frames silenced after the last frame found to carry a tone. A tone rarely ends on a frame
#: boundary: the frame holding its tail is mostly silence or speech and is not caught, so
#: without a hangover that tail (up to 18 ms of tone) would reach the agent. The second frame
#: covers a frame missed inside the tone (speech or line noise mixed in) followed by the tail.
#: It costs 40 ms of silence after each key, when the caller is keying, not speaking.
HANGOVER_FRAMES: Final = 2
#: The probes either side of each DTMF frequency (see the module notes).
PROBE_SPREAD: Final = 0.012
#: The coverage (samples of a 160-sample frame) from which every tone the tests try is caught.
FULL_DETECTION_SAMPLES: Final = 148

# Thresholds: detect_digits's (archer.audio.dtmf) or more lenient ones.
# Dominance: a pure tone leaks 13 dB into the neighbouring row/column frequency; 6 dB leaves room.
_DOMINANCE: Final = 10 ** (6 / 10)
# Twist: 10 dB either way (detect_digits allows 8; keypads send the column tone a few dB louder).
_TWIST: Final = 10 ** (10 / 10)
# Each tone at least -40 dBFS (detect_digits: -36), in the units of the mean square.
_MIN_POWER: Final = (32767 * 10 ** (-40 / 20)) ** 2 / 2
# The two tones must be this share of the frame's energy (detect_digits: 0.7). Over every speech
# clip then packaged, at four levels and four alignments (55,756 frames), 0.65 took none and 0.6
# took 12 (0.02 %); a tone alone puts ~1.0 there, and one covering 90 % of a frame about 0.9.
_TONE_SHARE: Final = 0.65

_KEYPAD: Final = ("123A", "456B", "789C", "*0#D")
_FREQUENCIES: Final = np.array(ROWS + COLUMNS, dtype=np.float64)
_SPREADS: Final = (-PROBE_SPREAD, 0.0, PROBE_SPREAD)
_PROBES: Final = len(_SPREADS)
_TONES: Final = len(_FREQUENCIES)
#: μ-law byte → linear sample, as float64, so a frame is decoded by one ``take``.
_DECODE: Final = g711.decode_samples(bytes(range(256))).astype(np.float64)


@functools.cache
def _basis(samples: int) -> npt.NDArray[np.float64]:
    """Cosine rows, then sine rows, for every probe of every DTMF frequency over ``samples``
    samples: ``basis @ block`` gives the real and imaginary DFT terms (what Goertzel computes)
    at once. Rows, not columns: a contiguous (48, n) matrix times a vector is the quicker form."""
    probes = np.concatenate([_FREQUENCIES * (1 + spread) for spread in _SPREADS])
    phase = 2 * np.pi * np.outer(probes, np.arange(samples)) / _SAMPLE_RATE
    basis: npt.NDArray[np.float64] = np.ascontiguousarray(
        np.concatenate([np.cos(phase), np.sin(phase)], axis=0)
    )
    return basis


def frame_tone(ulaw: bytes) -> str | None:
    """The keypad digit whose tone the μ-law ``ulaw`` carries, or None.

    ``ulaw`` is one frame: Twilio's are 160 bytes (20 ms). A payload of another length is
    checked as one block of that length (its basis is built once and cached); a much shorter
    block tells neighbouring DTMF frequencies apart less well, so finds fewer tones.
    """
    samples = len(ulaw)
    if samples == 0:
        return None
    x = _DECODE.take(np.frombuffer(ulaw, dtype=np.uint8))
    # Compared unscaled: a tone's power (its mean square) is 2|term|²/n², the frame's energy
    # (mean square) is sum/n, so each threshold is scaled once instead of every power.
    total = float(x @ x)
    # A tone's power is at most twice the frame's mean square (Cauchy-Schwarz), so a frame with
    # less energy than half one tone's minimum holds none: silence is answered here.
    if total < _MIN_POWER / 2 * samples:
        return None
    terms = _basis(samples) @ x
    squares = terms * terms
    half = _PROBES * _TONES
    probed = squares[:half] + squares[half:]  # |term|² of each probe: low, nominal, high
    power: list[float] = np.maximum(
        np.maximum(probed[:_TONES], probed[_TONES : 2 * _TONES]), probed[2 * _TONES :]
    ).tolist()
    rows, columns = power[:4], power[4:]
    row, column = max(rows), max(columns)
    if min(row, column) < _MIN_POWER / 2 * samples**2:
        return None
    if row + column < _TONE_SHARE / 2 * samples * total:
        return None
    if not 1 / _TWIST <= row / column <= _TWIST:
        return None
    if sorted(rows)[-2] * _DOMINANCE > row or sorted(columns)[-2] * _DOMINANCE > column:
        return None
    return _KEYPAD[rows.index(row)][columns.index(column)]


def frame_has_tone(ulaw: bytes) -> bool:
    """Whether one μ-law frame carries a keypad tone (``frame_tone`` is not None)."""
    return frame_tone(ulaw) is not None


@attrs.define
class ToneGate:
    """One call's caller frames: which to replace by silence before they reach the agent."""

    #: Frames still to silence after the last frame that carried a tone.
    _hangover: int = 0

    def blocks(self, payload: str) -> bool:
        """Whether the base64 μ-law frame ``payload`` must not reach the agent (it carries a
        tone, or follows one within ``HANGOVER_FRAMES``).

        Raises:
            binascii.Error: ``payload`` is not base64 (Archer's Twilio parser has checked it).
        """
        if frame_has_tone(binascii.a2b_base64(payload)):
            self._hangover = HANGOVER_FRAMES
            return True
        if self._hangover:
            self._hangover -= 1
            return True
        return False
