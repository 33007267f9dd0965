"""Streaming sample-rate conversion between Twilio's 8 kHz and an agent's 16/24/44.1 kHz PCM.

Layer: pure audio. No I/O, no trio. Rules:

- One ``StreamResampler`` per direction per call, never shared: the filter keeps history across
  chunks, which is what stops clicks at 20 ms chunk boundaries (resampling each chunk on its own
  is the "crispy white noise" bug other bridges shipped), and the history belongs to one signal.
- ``process`` may return fewer samples than the ratio says, or none: soxr works in blocks and
  holds audio back until a block is full, then releases it in a burst. Callers frame whatever
  comes out and never assume one frame out per frame in.
- ``flush`` at the end of a turn releases the held-back tail (otherwise the last words of a turn
  are stuck until the next one pushes them out); ``reset`` after a barge-in drops it (otherwise
  the interrupted answer leaks into the next one).

Samples are int16 mono, the same numpy arrays ``g711.decode_samples`` gives and
``g711.encode_samples`` takes. soxr dithers its int16 output (±1 LSB), so silence in comes out as
±1 noise (-90 dBFS, inaudible) and two runs over the same audio differ by up to 2 LSB.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

import attrs
import numpy as np
import numpy.typing as npt
import soxr

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

#: soxr's quality recipes, quickest first.
QUALITIES: Final[tuple[Quality, ...]] = get_args(Quality)

# Chosen from bench/resample_quality.py (soxr 1.1.0, int16, fed 20 ms chunks). "held" is audio fed
# in but not yet given out after a chunk, in ms, average / worst chunk: soxr releases audio in
# blocks, and since it already places output samples where they belong (the bench's burst
# alignment is 0.00 ms for every quality), "held" is all the delay it adds. "alias" is what 4.5-7
# kHz tones leave in the 8 kHz output, relative to their input level; "image" is what a 3 kHz
# tone leaves above 4.2 kHz when upsampling; "3.4k" is the gain at the top of the telephone band.
#
#   quality  8k->16k held  16k->8k held  44.1k->8k held  alias 16k->8k  image 8k->16k  3.4k
#   QQ          0.3 / 0.3     0.1 / 0.1       0.0 / 0.0        0.0 dB       -11 dB    -2.5 dB *
#   LQ         33 / 61       33 / 61         24 / 44         -87 dB         -91 dB    -7.9 dB
#   MQ         63 / 118      63 / 118        47 / 82         -87 dB         -91 dB     0.0 dB
#   HQ         63 / 115      63 / 115        47 / 80         -87 dB         -91 dB     0.0 dB
#   VHQ        64 / 111      64 / 111        93 / 169        -87 dB         -91 dB     0.0 dB
#   (* upsampling; 0.0 dB downsampling. At 24 kHz HQ holds 43 / 73 ms each way.)
#
# The telephone band is 300-3400 Hz. QQ adds no delay but filters nothing when downsampling:
# whatever the agent's voice has at 4-8 kHz (its fricatives: s, f, sh) folds into the band at full
# level, and upsampled caller audio keeps images only 11 dB down. LQ halves the delay but its
# passband ends near 3.2 kHz, cutting the top of the band by 8 dB. MQ, HQ and VHQ all put aliases
# at the int16 noise floor (-87 dB; precision beyond 16 bits is lost on int16 anyway) with a flat
# band. HQ holds back the same as MQ (and is flatter at 44.1 kHz); VHQ holds back twice as much
# at 24 and 44.1 kHz. So HQ. Its ~63 ms average per direction at 16 kHz is real latency on every
# turn; the cure is not a worse filter but no resampling at all: ask the agent for mulaw_8000.
DEFAULT_QUALITY: Final[Quality] = "HQ"

_EMPTY: Final = np.zeros(0, dtype=np.int16)


def _quality(value: str) -> Quality:
    # Settings arrive as plain strings; only soxr's own names, in soxr's spelling, are accepted.
    for quality in QUALITIES:
        if value == quality:
            return quality
    raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, not {value!r}")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be a positive sample rate, not {value}")


@attrs.define
class StreamResampler:
    """Stateful int16 mono resampler for one direction of one call (soxr's streaming resampler).

    Raises:
        ValueError: a rate is not positive, or ``quality`` is not one of ``QUALITIES``.
    """

    in_rate: int = attrs.field(validator=_positive)
    out_rate: int = attrs.field(validator=_positive)
    quality: Quality = attrs.field(default=DEFAULT_QUALITY, kw_only=True, converter=_quality)
    # soxr ships no type information; the stream is opaque here anyway.
    _stream: Any = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._stream = soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="int16", quality=self.quality
        )

    @property
    def held_back_ms(self) -> float:
        """Milliseconds of audio fed in and not yet given out (soxr's own count; cheap)."""
        return float(self._stream.delay()) * 1000.0 / self.out_rate

    def process(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Resample the next chunk of the signal; the result may be empty (see the module notes)."""
        if samples.size == 0:
            return _EMPTY
        # soxr wants a C-contiguous int16 array; frames from g711 already are, so this is free.
        chunk = np.ascontiguousarray(samples, dtype=np.int16)
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(chunk)
        return out

    def flush(self) -> npt.NDArray[np.int16]:
        """End of a turn: the held-back tail; the resampler is then fresh for the next turn."""
        tail: npt.NDArray[np.int16] = self._stream.resample_chunk(_EMPTY, last=True)
        # soxr refuses input after last=True until cleared.
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """After a barge-in: drop the held-back audio and the filter history, unplayed."""
        self._stream.clear()
