"""WAV files: μ-law and PCM round trips, interchange with ``wave`` and sox, and what is refused."""

from __future__ import annotations

import importlib.resources
import struct
import wave
from pathlib import Path

import pytest

from archer.audio import g711
from archer.audio.wav import Audio, WavError, read_wav, write_wav

# A rising tone's worth of distinct samples, so a reordering or offset would show.
PCM = b"".join(struct.pack("<h", (i * 997) % 65536 - 32768) for i in range(801))


def _write_with_wave(path: Path, *, channels: int, width: int, frames: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(8000)
        out.writeframes(frames)


@pytest.mark.parametrize("length", [0, 1, 800, 801])
def test_mulaw_round_trip(tmp_path: Path, length: int) -> None:
    """μ-law audio reads back identical, odd lengths included (the pad byte is not data)."""
    audio = Audio(8000, "mulaw", g711.encode(PCM)[:length])
    path = tmp_path / "a.wav"
    write_wav(path, audio)
    assert read_wav(path) == audio
    assert len(path.read_bytes()) % 2 == 0  # RIFF chunks stay word-aligned


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_pcm_round_trip(tmp_path: Path, rate: int) -> None:
    """16-bit PCM audio reads back identical at any rate."""
    audio = Audio(rate, "pcm16", PCM)
    path = tmp_path / "a.wav"
    write_wav(path, audio)
    back = read_wav(path)
    assert back == audio
    assert back.seconds == pytest.approx(801 / rate)


def test_pcm_file_is_readable_by_stdlib_wave(tmp_path: Path) -> None:
    """The stdlib wave module reads our PCM file as mono 16-bit with the same frames."""
    path = tmp_path / "a.wav"
    write_wav(path, Audio(16000, "pcm16", PCM))
    with wave.open(str(path), "rb") as wav_in:
        assert wav_in.getnchannels() == 1
        assert wav_in.getsampwidth() == 2
        assert wav_in.getframerate() == 16000
        assert wav_in.readframes(wav_in.getnframes()) == PCM


def test_reads_pcm_file_written_by_stdlib_wave(tmp_path: Path) -> None:
    """A mono 16-bit file from the stdlib wave module reads as pcm16."""
    path = tmp_path / "a.wav"
    _write_with_wave(path, channels=1, width=2, frames=PCM)
    assert read_wav(path) == Audio(8000, "pcm16", PCM)


def test_reads_mulaw_file_made_by_sox() -> None:
    """A committed clip, converted by sox (18-byte fmt, fact chunk), reads as 8 kHz μ-law."""
    resource = importlib.resources.files("archer") / "data" / "speech" / "agent_goodbye.wav"
    with importlib.resources.as_file(resource) as path:
        audio = read_wav(path)
        blob = path.read_bytes()
    assert audio.encoding == "mulaw"
    assert audio.sample_rate == 8000
    assert audio.seconds > 1
    assert struct.unpack_from("<I", blob, 16) == (18,)  # sox's fmt chunk has cbSize
    assert blob.endswith(audio.data)  # the data chunk is last in sox's output: all of it read


def test_stereo_is_refused(tmp_path: Path) -> None:
    """A two-channel file raises WavError naming the channel count."""
    path = tmp_path / "stereo.wav"
    _write_with_wave(path, channels=2, width=2, frames=PCM[:800])
    with pytest.raises(WavError, match="2 channels"):
        read_wav(path)


def test_8_bit_pcm_is_refused(tmp_path: Path) -> None:
    """8-bit PCM (format 1, 8 bits) is neither μ-law nor 16-bit PCM: WavError."""
    path = tmp_path / "8bit.wav"
    _write_with_wave(path, channels=1, width=1, frames=bytes(range(256)))
    with pytest.raises(WavError, match="format 1 with 8 bits"):
        read_wav(path)


@pytest.mark.parametrize(
    "blob",
    [b"", b"RIFF", b"RIFX\x00\x00\x00\x00WAVE", b"RIFF\x00\x00\x00\x00AVI ", b"ID3\x04" * 10],
)
def test_non_riff_wave_is_refused(tmp_path: Path, blob: bytes) -> None:
    """Anything that is not a RIFF/WAVE header raises WavError."""
    path = tmp_path / "x.wav"
    path.write_bytes(blob)
    with pytest.raises(WavError, match="not a RIFF/WAVE file"):
        read_wav(path)


def test_missing_data_chunk_is_refused(tmp_path: Path) -> None:
    """A RIFF/WAVE file with a fmt chunk but no data chunk raises WavError."""
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    with pytest.raises(WavError, match="missing fmt or data chunk"):
        read_wav(path)
