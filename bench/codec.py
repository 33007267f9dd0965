"""How fast is Archer's audio path? Our μ-law codec and resampling against ``audioop``, per frame.

Run: /work/venv/bin/python bench/codec.py  (about half a minute; prints a table)

One process, same inputs, same machine state for every column. Each figure is the best of 5
runs of a loop long enough to take at least 20 ms (timeit's method): the best run is the one
least disturbed by everything else the machine was doing. "×" is how many times faster Archer
is (the other's time over ours), so above 1 is better.

Reference implementations: the stdlib ``audioop`` (Python 3.11 and 3.12; removed in 3.13) and
the ``audioop-lts`` package (the same C code, installable on 3.13 and later only). Whichever of
the two this interpreter lacks gets its column skipped, with a note.

Targets (from the issue): per 20 ms frame, decode + encode together ≤ 5 µs; per second of audio,
at least as fast as audioop; the whole per-frame path (parse, transcode, resample, build) about
10 µs in and 8.5 µs out at 8 kHz, 21 / 16 µs with resampling to 16 kHz.
"""

from __future__ import annotations

import binascii
import functools
import importlib
import importlib.metadata
import platform
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import soxr

from archer.audio import g711
from archer.audio.resample import DEFAULT_QUALITY, StreamResampler
from archer.bench.timing import best_of_us, interpreter_build
from archer.cartesia import managed
from archer.twilio.frames import Media, OutboundFrames, parse_frame

FRAME = 160  # 20 ms of μ-law at 8 kHz
Bench = Callable[[], object]


def _load_audioop() -> tuple[ModuleType | None, ModuleType | None, str]:
    """(stdlib audioop, audioop-lts, a note on what is missing)."""
    with warnings.catch_warnings():
        # The stdlib module warns on import (PEP 594); the warning is not news here.
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop: ModuleType | None
        try:
            audioop = importlib.import_module("audioop")
        except ImportError:
            audioop = None
    try:
        lts_installed = importlib.metadata.version("audioop-lts")
    except importlib.metadata.PackageNotFoundError:
        lts_installed = None
    if sys.version_info >= (3, 13):
        if audioop is None or lts_installed is None:
            return None, None, "no stdlib audioop on 3.13+ and audioop-lts is not installed"
        return None, audioop, f"no stdlib audioop on 3.13+; audioop-lts {lts_installed}"
    return audioop, None, "audioop-lts installs on Python 3.13+ only; stdlib audioop used"


def _ulaw(seconds: float) -> bytes:
    # Speech-like content: a few tones with noise, so every μ-law segment is exercised.
    rng = np.random.default_rng(7)
    t = np.arange(int(8000 * seconds)) / 8000
    wave = 6000 * np.sin(2 * np.pi * 220 * t) + 3000 * np.sin(2 * np.pi * 1250 * t)
    wave += rng.normal(0, 1500, len(t))
    return g711.encode_samples(np.clip(wave, -32768, 32767).astype(np.int16))


def _pcm16k(seconds: float) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 6000 * np.sin(2 * np.pi * 220 * t) + 3000 * np.sin(2 * np.pi * 1250 * t)
    pcm: bytes = wave.astype("<i2").tobytes()
    return pcm


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _twilio_media(payload: str) -> str:
    # What Twilio sends 50 times a second (field order and sizes as on the wire).
    return (
        '{"event":"media","sequenceNumber":"812","media":{"track":"inbound","chunk":"811",'
        '"timestamp":"16200","payload":"' + payload + '"},"streamSid":"MZ' + "0" * 32 + '"}'
    )


def _codec_rows(audioop: ModuleType | None) -> list[tuple[str, Bench, Bench | None]]:
    frame_ulaw = _ulaw(0.02)
    frame_pcm = g711.decode(frame_ulaw)
    frame_samples = g711.decode_samples(frame_ulaw)
    rows: list[tuple[str, Bench, Bench | None]] = [
        (
            "frame decode (160 B)",
            lambda: g711.decode(frame_ulaw),
            (lambda: audioop.ulaw2lin(frame_ulaw, 2)) if audioop else None,
        ),
        (
            "frame decode_samples → int16",
            lambda: g711.decode_samples(frame_ulaw),
            (lambda: audioop.ulaw2lin(frame_ulaw, 2)) if audioop else None,
        ),
        (
            "frame encode (320 B)",
            lambda: g711.encode(frame_pcm),
            (lambda: audioop.lin2ulaw(frame_pcm, 2)) if audioop else None,
        ),
        (
            "frame encode_samples ← int16",
            lambda: g711.encode_samples(frame_samples),
            (lambda: audioop.lin2ulaw(frame_pcm, 2)) if audioop else None,
        ),
        (
            "frame decode + encode",
            lambda: g711.encode(g711.decode(frame_ulaw)),
            (lambda: audioop.lin2ulaw(audioop.ulaw2lin(frame_ulaw, 2), 2)) if audioop else None,
        ),
    ]
    for seconds in (1, 60):
        ulaw = _ulaw(seconds)
        pcm = g711.decode(ulaw)
        rows += [
            (
                f"{seconds} s decode",
                functools.partial(g711.decode, ulaw),
                functools.partial(audioop.ulaw2lin, ulaw, 2) if audioop else None,
            ),
            (
                f"{seconds} s encode",
                functools.partial(g711.encode, pcm),
                functools.partial(audioop.lin2ulaw, pcm, 2) if audioop else None,
            ),
        ]
    return rows


def _ratecv(audioop: ModuleType, in_rate: int, out_rate: int, pcm: bytes) -> Bench:
    state = None

    def step() -> bytes:
        nonlocal state
        out: bytes
        out, state = audioop.ratecv(pcm, 2, 1, in_rate, out_rate, state)
        return out

    return step


def _resample_rows(audioop: ModuleType | None) -> list[tuple[str, Bench, Bench | None]]:
    up_in = g711.decode_samples(_ulaw(0.02))
    down_in = np.frombuffer(_pcm16k(0.02), dtype="<i2")
    up = StreamResampler(8000, 16000)
    down = StreamResampler(16000, 8000)
    return [
        (
            "frame resample 8k→16k",
            lambda: up.process(up_in),
            _ratecv(audioop, 8000, 16000, up_in.tobytes()) if audioop else None,
        ),
        (
            "frame resample 16k→8k",
            lambda: down.process(down_in),
            _ratecv(audioop, 16000, 8000, down_in.tobytes()) if audioop else None,
        ),
    ]


def _path_rows(audioop: ModuleType | None) -> list[tuple[str, Bench, Bench | None]]:
    """Whole per-frame paths through Archer's own parsers and builders (steady state)."""
    message_in = _twilio_media(_b64(_ulaw(0.02)))
    message_out_8k = managed.audio_output(_b64(_ulaw(0.02)))
    message_out_16k = managed.audio_output(_b64(_pcm16k(0.02)))
    outbound = OutboundFrames("MZ" + "0" * 32)
    up = StreamResampler(8000, 16000)
    down = StreamResampler(16000, 8000)

    def payload(message: str) -> str:
        frame = parse_frame(message)
        assert isinstance(frame, Media)
        return frame.payload

    def agent_audio(message: str) -> str:
        event = managed.parse_server_event(message)
        assert isinstance(event, managed.AudioOutput)
        return event.audio

    def in_8k() -> str:
        return managed.audio_input(payload(message_in))

    def in_16k() -> str | None:
        ulaw = binascii.a2b_base64(payload(message_in))
        out = up.process(g711.decode_samples(ulaw))
        return (
            managed.audio_input(_b64(out.astype("<i2", copy=False).tobytes())) if out.size else None
        )

    def out_8k() -> str:
        return outbound.media(agent_audio(message_out_8k))

    def out_16k() -> list[str]:
        pcm = binascii.a2b_base64(agent_audio(message_out_16k))
        ulaw = g711.encode_samples(down.process(np.frombuffer(pcm, dtype="<i2")))
        return [outbound.media(_b64(ulaw[i : i + FRAME])) for i in range(0, len(ulaw), FRAME)]

    rows: list[tuple[str, Bench, Bench | None]] = [
        ("path in, μ-law passthrough", in_8k, None),
        ("path out, μ-law passthrough", out_8k, None),
    ]
    if audioop is None:
        return [
            *rows,
            ("path in, PCM 16 kHz", in_16k, None),
            ("path out, PCM 16 kHz", out_16k, None),
        ]
    state_in = state_out = None

    def in_16k_audioop() -> str:
        nonlocal state_in
        pcm = audioop.ulaw2lin(binascii.a2b_base64(payload(message_in)), 2)
        out, state_in = audioop.ratecv(pcm, 2, 1, 8000, 16000, state_in)
        return managed.audio_input(_b64(out))

    def out_16k_audioop() -> list[str]:
        nonlocal state_out
        pcm = binascii.a2b_base64(agent_audio(message_out_16k))
        out, state_out = audioop.ratecv(pcm, 2, 1, 16000, 8000, state_out)
        ulaw = audioop.lin2ulaw(out, 2)
        return [outbound.media(_b64(ulaw[i : i + FRAME])) for i in range(0, len(ulaw), FRAME)]

    return [
        *rows,
        ("path in, PCM 16 kHz", in_16k, in_16k_audioop),
        ("path out, PCM 16 kHz", out_16k, out_16k_audioop),
    ]


def _cell(ours: float, theirs: Bench | None, skipped: bool) -> str:
    if theirs is None:
        return f"{'—' if skipped else 'n/a':>10} {'':>7}"
    other = best_of_us(theirs)
    return f"{other:10.2f} {other / ours:6.2f}×"


def main() -> None:
    stdlib, lts, note = _load_audioop()
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), {sys.platform}"
    )
    print(f"interpreter build: {interpreter_build()}")
    print(f"numpy {np.__version__}, soxr {soxr.__version__}; resampling at {DEFAULT_QUALITY!r}")
    print(f"note: {note}")
    print()
    header = (
        f"{'µs per call':32} {'archer':>9} {'audioop':>10} {'×':>7} {'audioop-lts':>11} {'×':>7}"
    )
    print(header)
    print("-" * len(header))
    sections = [
        ("G.711 μ-law codec", _codec_rows),
        (f"stateful resampling, 20 ms frames ({DEFAULT_QUALITY} vs ratecv)", _resample_rows),
        ("whole path per 20 ms frame: parse → transcode → build", _path_rows),
    ]
    for title, make_rows in sections:
        print(f"{title}:")
        std_rows = make_rows(stdlib)
        lts_rows = make_rows(lts)
        for (label, ours_bench, std_bench), (_, _, lts_bench) in zip(
            std_rows, lts_rows, strict=True
        ):
            ours = best_of_us(ours_bench)
            print(
                f"  {label:30} {ours:9.2f} {_cell(ours, std_bench, stdlib is None)}"
                f" {_cell(ours, lts_bench, lts is None)}"
            )
    print()
    print("×: the other's time / archer's (above 1: archer is faster). —: not on this Python.")
    print("n/a: nothing to compare (passthrough does no audio work).")
    print(
        "Resampled paths are averaged over bursts: soxr gives nothing for some frames, then many."
    )
    print(
        "audioop.ratecv does no anti-alias filtering; see bench/resample_quality.py for the cost."
    )


if __name__ == "__main__":
    main()
