"""An energy voice-activity detector: is someone speaking on this 16-bit audio?

Layer: pure audio. No I/O, no trio, no clock: time is the audio's own, advanced by the
``duration_ms`` of each frame fed, so the detector behaves the same in a test, in an emulator
fed by a socket, or over a file.

Rules: feed one frame at a time (20 ms is the norm; any sample rate, as the frame's duration is
given). A frame is loud when its RMS level is at or above ``threshold_dbfs``. Speech starts once
frames stay loud for ``start_ms`` in a row (so a click does not count) and ends once they stay
quiet for ``stop_ms`` in a row (so the pause between words does not end it). Each change is
reported exactly once, as a frozen event carrying where on the audio's timeline it happened.
"""

from __future__ import annotations

import math
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

#: Full scale of a 16-bit sample: a square wave at ±32768 is 0 dBFS.
FULL_SCALE: Final = 32768.0


@attrs.frozen(slots=True)
class SpeechStarted:
    """Speech began ``at_ms`` into the audio (the start of its first loud frame)."""

    at_ms: float


@attrs.frozen(slots=True)
class SpeechEnded:
    """Speech ended ``at_ms`` into the audio (the end of its last loud frame)."""

    at_ms: float


VadEvent = SpeechStarted | SpeechEnded


def level_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """The RMS level of ``samples`` in dBFS; ``-inf`` for digital silence or no samples."""
    if samples.size == 0:
        return -math.inf
    # float64: squares of int16 overflow int32 sums on long frames.
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    if rms == 0.0:
        return -math.inf
    return 20.0 * math.log10(rms / FULL_SCALE)


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _at_most_zero(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value <= 0:
        raise ValueError(f"{attribute.name} must be at most 0 dBFS, not {value!r}")


@attrs.define
class EnergyVad:
    """Tracks one audio stream; ``feed`` it consecutive frames and act on the events."""

    threshold_dbfs: float = attrs.field(default=-40.0, validator=_at_most_zero)
    start_ms: float = attrs.field(default=60.0, validator=_positive)
    stop_ms: float = attrs.field(default=600.0, validator=_positive)
    _speaking: bool = attrs.field(default=False, init=False)
    _position_ms: float = attrs.field(default=0.0, init=False)
    #: Length of the current run of loud (while silent) or quiet (while speaking) frames.
    _run_ms: float = attrs.field(default=0.0, init=False)
    _run_started_ms: float = attrs.field(default=0.0, init=False)

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not yet ended."""
        return self._speaking

    @property
    def position_ms(self) -> float:
        """How much audio has been fed so far (the end of the last frame)."""
        return self._position_ms

    def feed(self, samples: npt.NDArray[np.int16], *, duration_ms: float) -> VadEvent | None:
        """Take the next frame, ``duration_ms`` long; return the change it completes, if any.

        Raises:
            ValueError: ``duration_ms`` is negative or not finite.
        """
        if not (math.isfinite(duration_ms) and duration_ms >= 0):
            raise ValueError(f"duration_ms must be a finite non-negative number: {duration_ms!r}")
        frame_start = self._position_ms
        self._position_ms += duration_ms
        loud = level_dbfs(samples) >= self.threshold_dbfs
        # A run is of the frames that would change the state: loud ones while silent, quiet
        # ones while speaking. Any other frame breaks it.
        if loud == self._speaking:
            self._run_ms = 0.0
            return None
        if self._run_ms == 0.0:
            self._run_started_ms = frame_start
        self._run_ms += duration_ms
        if not self._speaking and self._run_ms >= self.start_ms:
            self._speaking, self._run_ms = True, 0.0
            return SpeechStarted(at_ms=self._run_started_ms)
        if self._speaking and self._run_ms >= self.stop_ms:
            self._speaking, self._run_ms = False, 0.0
            return SpeechEnded(at_ms=self._run_started_ms)
        return None
