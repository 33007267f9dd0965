"""Which soxr quality should Archer resample with? Measures delay and alias rejection per quality.

Run: /work/venv/bin/python bench/resample_quality.py  (a few seconds; prints a table)

Every figure comes from a ``StreamResampler`` fed 20 ms chunks, as a call feeds it:

- held avg / worst: milliseconds of audio fed in but not yet given out after each chunk (sample
  accounting: input fed minus output produced), averaged over 3 s of chunks, and the worst chunk.
  This is the delay resampling adds: soxr releases audio in blocks, not per chunk.
- align: where a tone burst comes out relative to where it went in (cross-correlation of the
  streamed output, flushed, with the burst generated directly at the output rate). 0 means soxr
  already compensates its filter's own delay in sample positions, so "held" is the whole delay.
- reject: when downsampling, the energy a tone above the 8 kHz output's Nyquist leaves in the
  output (4.5, 5, 6 and 7 kHz tones; the worst), relative to the tone's input level. When
  upsampling, the energy a 3 kHz tone leaves above 4.2 kHz (images), relative to its level.
- 4.2k: the same for a 4.2 kHz tone (just above Nyquist; folds to 3.8 kHz, outside the
  300-3400 Hz telephone band): how steep the transition band is. Downsampling only.
- 3.4k: the gain of a 3.4 kHz tone (the top of the telephone band); 0 dB is a flat band.
- µs/chunk: CPU per 20 ms chunk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from archer.audio.resample import DEFAULT_QUALITY, QUALITIES, Quality, StreamResampler

PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (8000, 44100), (44100, 8000)]
AMPLITUDE = 16384  # -6 dBFS
SECONDS = 3.0
CHUNK_S = 0.020

Signal = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def _samples(signal: Signal, rate: int) -> npt.NDArray[np.int16]:
    t = np.arange(int(SECONDS * rate)) / rate
    return np.round(signal(t) * AMPLITUDE).astype(np.int16)


def _stream(
    resampler: StreamResampler, x: npt.NDArray[np.int16], held: list[float] | None = None
) -> npt.NDArray[np.int16]:
    chunk = round(resampler.in_rate * CHUNK_S)
    out, fed, given = [], 0, 0
    for start in range(0, len(x), chunk):
        piece = x[start : start + chunk]
        y = resampler.process(piece)
        out.append(y)
        fed += len(piece)
        given += len(y)
        if held is not None:
            held.append(1000 * (fed / resampler.in_rate - given / resampler.out_rate))
    out.append(resampler.flush())
    return np.concatenate(out)


def _db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


def _rms(x: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def _steady(y: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    # Skip the start and the flushed end: only the steady state says what the filter does.
    return y[rate // 4 : int((SECONDS - 0.25) * rate)]


def _tone(freq: float) -> Signal:
    return lambda t: np.sin(2 * np.pi * freq * t)


def _burst_train(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # A 10 ms Hann-windowed 1 kHz burst every 250 ms: in band for every rate pair.
    phase = np.mod(t, 0.25) - 0.1
    window = np.where(np.abs(phase) < 0.005, 0.5 + 0.5 * np.cos(np.pi * phase / 0.005), 0.0)
    return window * np.sin(2 * np.pi * 1000 * t)


def _align_ms(quality: Quality, in_rate: int, out_rate: int) -> float:
    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    y = _stream(resampler, _samples(_burst_train, in_rate))
    ref = _samples(_burst_train, out_rate).astype(np.float64)
    n = min(len(y), len(ref))
    lags = np.arange(-out_rate // 50, out_rate // 50 + 1)
    corr = [np.dot(np.roll(ref[:n], lag), y[:n].astype(np.float64)) for lag in lags]
    return 1000 * float(lags[int(np.argmax(corr))]) / out_rate


def _gain_db(quality: Quality, in_rate: int, out_rate: int, freq: float) -> float:
    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    x = _samples(_tone(freq), in_rate)
    y = _steady(_stream(resampler, x), out_rate)
    return _db(_rms(y) / _rms(_steady(x, in_rate)))


def _image_db(quality: Quality, in_rate: int, out_rate: int) -> float:
    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    x = _samples(_tone(3000), in_rate)
    y = _steady(_stream(resampler, x), out_rate).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / out_rate)
    return 10 * math.log10(max(float(spectrum[freqs > 4200].sum()), 1e-12) / float(spectrum.sum()))


def _cpu_us(quality: Quality, in_rate: int, out_rate: int) -> float:
    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    chunk = _samples(_tone(1000), in_rate)[: round(in_rate * CHUNK_S)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(500):
            resampler.process(chunk)
        best = min(best, (time.perf_counter_ns() - start) / 500 / 1000)
    return best


def _row(quality: Quality, in_rate: int, out_rate: int) -> str:
    held: list[float] = []
    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    _stream(resampler, _samples(_tone(1000), in_rate), held)
    if out_rate < in_rate:
        reject = max(_gain_db(quality, in_rate, out_rate, f) for f in (4500, 5000, 6000, 7000))
        edge = f"{_gain_db(quality, in_rate, out_rate, 4200):6.1f}"
    else:
        reject = _image_db(quality, in_rate, out_rate)
        edge = f"{'':>6}"
    pair = f"{in_rate / 1000:g}k→{out_rate / 1000:g}k"
    align = _align_ms(quality, in_rate, out_rate)
    band = _gain_db(quality, in_rate, out_rate, 3400)
    cpu = _cpu_us(quality, in_rate, out_rate)
    return (
        f"{quality:7} {pair:>12} {np.mean(held):9.1f} {max(held):6.1f} {align:6.2f}"
        f" {reject:7.1f} {edge} {band:6.2f} {cpu:8.1f}"
    )


def main() -> None:
    header = (
        f"{'quality':7} {'pair':>12} {'held avg':>9} {'worst':>6} {'align':>6}"
        f" {'reject':>7} {'4.2k':>6} {'3.4k':>6} {'µs/chunk':>8}"
    )
    print(header)
    print("-" * len(header))
    for quality in QUALITIES:
        for in_rate, out_rate in PAIRS:
            print(_row(quality, in_rate, out_rate))
    print(f"\nDEFAULT_QUALITY = {DEFAULT_QUALITY!r}. held, align: ms of audio.")
    print("reject, 4.2k, 3.4k: dB re the input tone's level.")
    print("reject: alias (downsampling, 4.5-7 kHz tones) or image (upsampling, 3 kHz tone).")


if __name__ == "__main__":
    main()
