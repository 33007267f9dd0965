"""G.711 μ-law codec: bit-for-bit with the stdlib ``audioop``, and G.711's quantisation bounds."""

from __future__ import annotations

import sys
import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from archer.audio import g711

ALL_ULAW = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_PCM = ALL_SAMPLES.astype("<i2").tobytes()
#: The largest magnitude μ-law decodes to; louder samples clip to it.
PEAK = 32124

samples_lists = st.lists(st.integers(-32768, 32767), max_size=400)


def _pcm(samples: list[int]) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


@pytest.fixture(scope="module")
def audioop() -> ModuleType:
    """The stdlib ``audioop`` (3.11, 3.12) or the ``audioop-lts`` backport (3.13)."""
    if sys.byteorder != "little":
        pytest.skip("audioop works in native byte order; g711 is little-endian")
    # The stdlib module warns on import (PEP 594) and filterwarnings=error would fail on it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop  # the reference; absent on 3.13 without audioop-lts
        except ImportError:
            pytest.skip("no audioop: Python 3.13+ without the audioop-lts package")
    return audioop


def test_decode_matches_audioop_for_every_byte(audioop: ModuleType) -> None:
    """decode equals audioop.ulaw2lin(·, 2) on all 256 μ-law bytes."""
    assert g711.decode(ALL_ULAW) == audioop.ulaw2lin(ALL_ULAW, 2)


def test_encode_matches_audioop_for_every_sample(audioop: ModuleType) -> None:
    """encode equals audioop.lin2ulaw(·, 2) on all 65,536 16-bit samples."""
    assert g711.encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)


def test_sample_functions_agree_with_byte_functions() -> None:
    """decode_samples and encode_samples give what decode and encode give, as int16."""
    decoded = g711.decode_samples(ALL_ULAW)
    assert decoded.dtype == np.int16
    assert decoded.astype("<i2").tobytes() == g711.decode(ALL_ULAW)
    assert g711.encode_samples(ALL_SAMPLES) == g711.encode(ALL_PCM)


@given(samples_lists)
@example([0, 1, -1, 2, -2, 3, -4, 4, -5])
@example([PEAK, PEAK + 1, -PEAK, -PEAK - 1, 32767, -32768])
def test_round_trip_is_within_quantisation_error(samples: list[int]) -> None:
    """decode(encode(x)) is within half a segment step of x, plus the 2 bits audioop drops.

    audioop quantises x >> 2 (14 bits, floored), so up to 3 is lost before quantising. In segment
    s (the μ-law byte's exponent bits) the 14-bit step is 2**(s + 1), i.e. 2**(s + 3) in 16-bit
    units, and the decoder returns the middle of the step. So |decoded - x| <= step / 2 + 3:
    7 in the quietest segment, 515 in the loudest. Beyond ±PEAK, μ-law clips to ±PEAK.
    """
    encoded = g711.encode(_pcm(samples))
    decoded = g711.decode_samples(encoded).astype(np.int64)
    wide = np.array(samples, dtype=np.int64)
    inside = np.abs(wide) <= PEAK
    segment = (~np.frombuffer(encoded, dtype=np.uint8).astype(np.int64) >> 4) & 0x7
    bound = (8 << segment) // 2 + 3  # 8 << segment: the segment's step in 16-bit units
    assert np.all(np.abs(decoded - wide)[inside] <= bound[inside])
    assert np.all(decoded[~inside] == np.sign(wide[~inside]) * PEAK)


@given(st.binary(max_size=600))
def test_reencoding_decoded_ulaw_is_identity_except_0x7f(ulaw: bytes) -> None:
    """encode(decode(u)) == u for every byte except 0x7F, which decodes to 0 and so becomes 0xFF."""
    assert g711.encode(g711.decode(ulaw)) == ulaw.replace(b"\x7f", b"\xff")


def test_0x7f_and_0xff_are_both_zero() -> None:
    """The two μ-law zeros (0x7F negative, 0xFF positive) both decode to 0; 0 encodes to 0xFF."""
    assert g711.decode(b"\x7f\xff") == b"\x00\x00\x00\x00"
    assert g711.encode(b"\x00\x00") == bytes([g711.SILENCE])
    assert g711.encode(g711.decode(ALL_ULAW)) == ALL_ULAW.replace(b"\x7f", b"\xff")


@given(samples_lists, st.integers(0, 255))
def test_odd_length_pcm_ignores_last_byte(samples: list[int], extra: int) -> None:
    """encode drops a trailing half sample: one μ-law byte per whole 16-bit sample."""
    pcm = _pcm(samples)
    encoded = g711.encode(pcm + bytes([extra]))
    assert encoded == g711.encode(pcm)
    assert len(encoded) == len(samples)


def test_empty_input() -> None:
    """Empty audio in, empty audio out, for all four functions."""
    assert g711.decode(b"") == b""
    assert g711.encode(b"") == b""
    assert g711.encode(b"\x01") == b""
    assert g711.decode_samples(b"").shape == (0,)
    assert g711.encode_samples(np.array([], dtype=np.int16)) == b""
