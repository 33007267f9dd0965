"""WAV files of telephone audio: 8 kHz μ-law (format 7) or 16-bit PCM, mono.

Layer: pure audio (file I/O only in ``read_wav``/``write_wav``, never on the trio thread in the
service: the demo and emulators call them before or after a call).

The stdlib ``wave`` module knows PCM only, so the RIFF chunks are read and written here; a μ-law
WAV is what telephony tools (sox, Audacity, browsers) play directly.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final, Literal

import attrs

from archer.audio import g711

Encoding = Literal["mulaw", "pcm16"]
_FORMAT_PCM: Final = 1
_FORMAT_MULAW: Final = 7


class WavError(ValueError):
    """The file is not a mono 8-bit μ-law or 16-bit PCM WAV."""


@attrs.frozen
class Audio:
    """Mono audio: raw bytes in ``encoding`` at ``sample_rate``."""

    sample_rate: int
    encoding: Encoding
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")

    @property
    def seconds(self) -> float:
        width = 1 if self.encoding == "mulaw" else 2
        return len(self.data) / width / self.sample_rate

    def as_mulaw(self) -> bytes:
        """The audio as μ-law bytes (encoding PCM if needed; the rate is unchanged)."""
        return self.data if self.encoding == "mulaw" else g711.encode(self.data)


def read_wav(path: Path) -> Audio:
    """Read a mono μ-law or 16-bit PCM WAV file.

    Raises:
        WavError: not RIFF/WAVE, not mono, or another encoding.
        OSError: the file cannot be read.
    """
    blob = path.read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    offset, fmt, data = 12, None, None
    while offset + 8 <= len(blob):
        chunk_id, size = struct.unpack_from("<4sI", blob, offset)
        body = blob[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", body)
        elif chunk_id == b"data":
            data = body
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    if fmt is None or data is None:
        raise WavError(f"{path}: missing fmt or data chunk")
    format_tag, channels, sample_rate, _, _, bits = fmt
    if channels != 1:
        raise WavError(f"{path}: {channels} channels; only mono is supported")
    if format_tag == _FORMAT_MULAW and bits == 8:
        return Audio(sample_rate, "mulaw", data)
    if format_tag == _FORMAT_PCM and bits == 16:
        return Audio(sample_rate, "pcm16", data[: len(data) & ~1])
    raise WavError(f"{path}: format {format_tag} with {bits} bits is not μ-law or 16-bit PCM")


def write_wav(path: Path, audio: Audio) -> None:
    """Write ``audio`` as a mono WAV (μ-law with a ``fact`` chunk, or plain 16-bit PCM)."""
    if audio.encoding == "mulaw":
        fmt = struct.pack(
            "<HHIIHHH", _FORMAT_MULAW, 1, audio.sample_rate, audio.sample_rate, 1, 8, 0
        )
        extra = b"fact" + struct.pack("<II", 4, len(audio.data))
    else:
        rate = audio.sample_rate
        fmt = struct.pack("<HHIIHH", _FORMAT_PCM, 1, rate, rate * 2, 2, 16)
        extra = b""
    data = audio.data + (b"\x00" if len(audio.data) & 1 else b"")
    chunks = (
        b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + extra
        + b"data" + struct.pack("<I", len(audio.data)) + data
    )  # fmt: skip
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
