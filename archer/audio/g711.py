"""G.711 μ-law ⇄ 16-bit linear PCM, with the stdlib ``audioop`` semantics, bit for bit.

Layer: pure audio. No I/O, no trio. The stdlib ``audioop`` is deprecated and gone in Python 3.13,
so this is Archer's own codec: two lookup tables built once at import from the reference
algorithm (ITU-T G.711 as implemented by Sun's ``g711.c``, which ``audioop`` uses), then one
numpy ``take`` per call. Decoding reads a table of byte *pairs* (65,536 entries, two samples a
lookup); encoding indexes a 65,536-entry table by the sample's bit pattern; both cost the same
for every sample and never branch.

PCM is signed 16-bit little-endian mono, as Cartesia's ``pcm_*`` formats and WAV files carry it.
An odd trailing byte of PCM (half a sample) is ignored, like ``audioop`` refuses it; μ-law has
no odd lengths (one byte per sample).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

#: μ-law of silence (linear 0); Twilio sends it between words.
SILENCE: Final = 0xFF

_BIAS: Final = 0x84
_CLIP: Final = 8159  # in the 14-bit domain audioop works in
_SEGMENT_ENDS: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _decode_table() -> npt.NDArray[np.int16]:
    # Little-endian int16, so ``decode``'s bytes are the PCM wire format on any host.
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + _BIAS) << ((inverted & 0x70) >> 4)
    linear = np.where(inverted & 0x80, _BIAS - magnitude, magnitude - _BIAS)
    return linear.astype("<i2")


def _encode_table() -> npt.NDArray[np.uint8]:
    # Index: the 16-bit sample's bit pattern (0..65535); value: its μ-law byte.
    samples = np.arange(65536, dtype=np.int32)
    samples = np.where(samples >= 32768, samples - 65536, samples)
    value = samples >> 2  # audioop keeps the top 14 bits (arithmetic shift)
    mask = np.where(value < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(value), _CLIP) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude, side="left")
    quantised = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    encoded = np.where(segment >= 8, 0x7F, quantised) ^ mask
    return encoded.astype(np.uint8)


def _pair_table(single: npt.NDArray[np.int16]) -> npt.NDArray[np.uint32]:
    # Index: two μ-law bytes read as one little-endian uint16; value: both decoded samples as
    # one little-endian uint32. One gather per two samples: bulk decoding runs about twice as
    # fast as a gather per sample, for a 256 KiB table.
    low = single.astype(np.int32) & 0xFFFF
    index = np.arange(65536, dtype=np.uint32)
    pairs: npt.NDArray[np.uint32] = (low[index & 0xFF] | (low[index >> 8] << 16)).astype("<u4")
    return pairs


_DECODE: Final = _decode_table()
_DECODE_PAIRS: Final = _pair_table(_DECODE)
_ENCODE: Final = _encode_table()


def decode(ulaw: bytes) -> bytes:
    """μ-law bytes → 16-bit little-endian PCM (``audioop.ulaw2lin(ulaw, 2)``)."""
    pairs = np.frombuffer(ulaw, dtype="<u2", count=len(ulaw) // 2)
    decoded: bytes = _DECODE_PAIRS.take(pairs).tobytes()
    if len(ulaw) & 1:
        decoded += _DECODE[ulaw[-1] : ulaw[-1] + 1].tobytes()
    return decoded


def encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM → μ-law bytes (``audioop.lin2ulaw(pcm, 2)``)."""
    whole = len(pcm) & ~1
    patterns = np.frombuffer(pcm, dtype="<u2", count=whole // 2)
    encoded: bytes = _ENCODE.take(patterns).tobytes()
    return encoded


def decode_samples(ulaw: bytes) -> npt.NDArray[np.int16]:
    """μ-law bytes → int16 samples (for metering and resampling without a bytes round trip)."""
    return _DECODE.take(np.frombuffer(ulaw, dtype=np.uint8))


def encode_samples(samples: npt.NDArray[np.int16]) -> bytes:
    """int16 samples → μ-law bytes."""
    encoded: bytes = _ENCODE.take(samples.astype(np.int16, copy=False).view(np.uint16)).tobytes()
    return encoded
