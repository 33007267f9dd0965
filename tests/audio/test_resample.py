"""Stream resampling: seamless across 20 ms chunks, any chunk size, flushed, reset.

soxr dithers its int16 output by ±1 LSB, so two runs over the same audio (or one over different
chunkings) agree within 2 LSB, not bit for bit; the bounds below allow exactly that.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from archer.audio.resample import DEFAULT_QUALITY, QUALITIES, Quality, StreamResampler

#: Largest difference two resamplings of the same audio may have (soxr's TPDF dither, ±1 each).
DITHER = 2


def _sweep(rate: int = 8000, seconds: float = 2.0) -> npt.NDArray[np.int16]:
    # A linear 300 Hz -> 3.4 kHz sweep (the telephone band) at -6 dBFS.
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (300 * t + (3400 - 300) * t**2 / (2 * seconds))
    return np.round(16384 * np.sin(phase)).astype(np.int16)


def _tone(freq: float, samples: int, rate: int, amplitude: float = 20000) -> npt.NDArray[np.int16]:
    return np.round(amplitude * np.sin(2 * np.pi * freq * np.arange(samples) / rate)).astype(
        np.int16
    )


def _stream(
    resampler: StreamResampler, x: npt.NDArray[np.int16], chunk: int
) -> list[npt.NDArray[np.int16]]:
    return [resampler.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]


def _round_trip(quality: Quality) -> list[npt.NDArray[np.int16]]:
    # 8k -> 16k -> 8k in 20 ms chunks, each stage's output fed on as it comes (possibly empty).
    up = StreamResampler(8000, 16000, quality=quality)
    down = StreamResampler(16000, 8000, quality=quality)
    out = [down.process(piece) for piece in _stream(up, _sweep(), 160)]
    out.append(down.process(up.flush()))
    out.append(down.flush())
    return out


@pytest.mark.parametrize("quality", QUALITIES)
def test_sweep_round_trip_has_no_discontinuity_at_chunk_boundaries(quality: Quality) -> None:
    """8k→16k→8k in 20 ms chunks: the steps where outputs meet are no worse than inside them.

    Two measures. The raw sample-to-sample step: the largest at a boundary is no larger than the
    largest inside the pieces. The step's excess over the one-shot resample's step at the same
    place (the sweep's own slope removed): two dithered stages on each side, so at most
    3 * DITHER (over 30 runs of every quality: ≤ 4 at boundaries, ≤ 6 anywhere). A click, a
    dropped or a repeated sample would be thousands (per-chunk soxr.resample: 5375).
    """
    pieces = _round_trip(quality)
    y = np.concatenate(pieces).astype(np.int64)
    one_shot = soxr.resample(
        soxr.resample(_sweep(), 8000, 16000, quality=quality), 16000, 8000, quality=quality
    ).astype(np.int64)
    assert len(y) == len(one_shot)
    steps = np.diff(y)
    excess = np.abs(steps - np.diff(one_shot))
    # Index i of steps is the step from y[i] to y[i + 1]; a piece ending at n meets the next at n-1.
    ends = np.cumsum([len(piece) for piece in pieces])[:-1]
    boundaries = sorted({int(end) - 1 for end in ends if 0 < end < len(y)})
    assert len(boundaries) > 10  # the round trip really did come out in many pieces
    inside = np.ones(len(steps), dtype=bool)
    inside[boundaries] = False
    assert np.abs(steps[boundaries]).max() <= np.abs(steps[inside]).max()
    assert excess[boundaries].max() <= 3 * DITHER


@pytest.mark.parametrize("quality", QUALITIES)
def test_sweep_round_trip_matches_one_shot(quality: Quality) -> None:
    """The streamed round trip equals a one-shot soxr.resample round trip: same length, same place,
    SNR ≥ 60 dB (measured 81-82 dB: only dither differs; a dropped or repeated sample anywhere
    would put it near 0 dB)."""
    y = np.concatenate(_round_trip(quality)).astype(np.float64)
    one_shot = soxr.resample(
        soxr.resample(_sweep(), 8000, 16000, quality=quality), 16000, 8000, quality=quality
    ).astype(np.float64)
    assert len(y) == len(one_shot) == len(_sweep())
    lags = range(-8, 9)
    errors = [float(np.sum((np.roll(y, lag) - one_shot)[400:-400] ** 2)) for lag in lags]
    assert lags[int(np.argmin(errors))] == 0  # streaming adds no offset in sample positions
    snr = 10 * np.log10(float(np.sum(one_shot[400:-400] ** 2)) / max(min(errors), 1e-9))
    assert snr >= 60


def test_empty_input_gives_empty_output() -> None:
    """process never raises on an empty chunk, before or after audio, and returns empty int16."""
    resampler = StreamResampler(8000, 16000)
    empty = np.zeros(0, dtype=np.int16)
    for _ in range(2):
        out = resampler.process(empty)
        assert out.shape == (0,)
        assert out.dtype == np.int16
        resampler.process(_tone(1000, 160, 8000))


def test_held_back_output_is_released_later_not_lost() -> None:
    """At the default quality some 20 ms chunks give nothing, but stream plus flush gives it all."""
    resampler = StreamResampler(16000, 8000)
    pieces = _stream(resampler, _tone(440, 16000, 16000), 320)
    assert any(len(piece) == 0 for piece in pieces)
    assert resampler.held_back_ms > 0
    total = sum(len(piece) for piece in pieces) + len(resampler.flush())
    assert total == 8000
    assert resampler.held_back_ms == 0


@pytest.mark.parametrize("chunk", [1, 7, 161, 333])
def test_odd_chunk_sizes_give_the_same_audio(chunk: int) -> None:
    """Chunks of 1, 7, 161 or 333 samples give what 20 ms chunks give, within dither."""
    x = _sweep()
    expected = np.concatenate([*_stream(r := StreamResampler(8000, 16000), x, 160), r.flush()])
    got = np.concatenate([*_stream(r := StreamResampler(8000, 16000), x, chunk), r.flush()])
    assert len(got) == len(expected) == 2 * len(x)
    assert np.abs(got.astype(np.int32) - expected).max() <= DITHER


def test_non_contiguous_input_is_accepted() -> None:
    """A strided view (every other sample) resamples like the same samples copied."""
    x = _tone(500, 3200, 8000)
    strided = np.concatenate([*_stream(r := StreamResampler(4000, 8000), x[::2], 80), r.flush()])
    copied = np.concatenate(
        [*_stream(r := StreamResampler(4000, 8000), x[::2].copy(), 80), r.flush()]
    )
    assert len(strided) == len(copied) == len(x)
    assert np.abs(strided.astype(np.int32) - copied).max() <= DITHER


@pytest.mark.parametrize("quality", QUALITIES)
def test_reset_drops_the_previous_turn(quality: Quality) -> None:
    """After reset, silence in gives only dither out: nothing of the tone fed before it."""
    silence = np.zeros(160, dtype=np.int16)

    def after_tone(reset: bool) -> npt.NDArray[np.int16]:
        resampler = StreamResampler(8000, 16000, quality=quality)
        _stream(resampler, _tone(1000, 2400, 8000), 160)
        if reset:
            resampler.reset()
        return np.concatenate([resampler.process(silence) for _ in range(25)] + [resampler.flush()])

    assert np.abs(after_tone(reset=False)).max() > 10000  # without reset the tone's tail leaks
    cleared = after_tone(reset=True)
    assert len(cleared) == 2 * 25 * 160
    assert np.abs(cleared).max() <= 1


@pytest.mark.parametrize("quality", QUALITIES)
def test_flush_releases_the_tail_and_the_next_turn_works(quality: Quality) -> None:
    """flush gives exactly the missing samples; the next turn then resamples like a fresh stream."""
    x = _tone(440, 4800, 16000, amplitude=10000)
    resampler = StreamResampler(16000, 8000, quality=quality)
    first = np.concatenate(_stream(resampler, x, 320))
    tail = resampler.flush()
    assert len(first) + len(tail) == 2400
    assert resampler.held_back_ms == 0
    second = np.concatenate([*_stream(resampler, x, 320), resampler.flush()])
    fresh = np.concatenate(
        [*_stream(r := StreamResampler(16000, 8000, quality=quality), x, 320), r.flush()]
    )
    assert len(second) == len(fresh) == 2400
    assert np.abs(second.astype(np.int32) - fresh).max() <= DITHER
    # The tail continues the first turn's tone; it is not silence or a restart.
    assert np.abs(np.concatenate([first, tail]).astype(np.int32) - fresh).max() <= DITHER


@pytest.mark.parametrize("quality", QUALITIES)
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (24000, 8000), (8000, 44100)])
def test_every_quality_constructs_and_resamples(
    quality: Quality, in_rate: int, out_rate: int
) -> None:
    """All five qualities work at the agent's rates: 1 s in gives 1 s out."""
    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    assert resampler.quality == quality
    pieces = _stream(resampler, _tone(1000, in_rate, in_rate), in_rate // 50)
    assert sum(len(piece) for piece in pieces) + len(resampler.flush()) == out_rate


def test_default_quality_is_one_of_the_qualities() -> None:
    """DEFAULT_QUALITY is a soxr quality and is what a resampler gets unless told otherwise."""
    assert DEFAULT_QUALITY in QUALITIES
    assert StreamResampler(8000, 16000).quality == DEFAULT_QUALITY


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "quality"),
    [(8000, 16000, "hq"), (8000, 16000, "best"), (0, 16000, "HQ"), (8000, -1, "HQ")],
)
def test_bad_settings_are_refused(in_rate: int, out_rate: int, quality: str) -> None:
    """An unknown quality name (soxr's spelling only) or a non-positive rate is a ValueError."""
    with pytest.raises(ValueError, match=r"quality|rate"):
        StreamResampler(in_rate, out_rate, quality=quality)
