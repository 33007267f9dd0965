"""Per-call audio conversion between Twilio (μ-law, 8 kHz) and the agent's format.

Layer: pure audio. One ``Transcoder`` per call, used only by that call's pumps.

Rules:
- ``mulaw_8000`` is a passthrough: the base64 string goes from one socket to the other untouched
  (no decode, no copy), in whatever chunk size the agent chose.
- PCM formats decode and resample each direction with its own stateful resampler, so chunk
  boundaries never click. Agent audio is cut into whole 20 ms μ-law frames (160 bytes) whatever
  size it arrives in; the remainder waits for the next chunk. At the end of an agent turn the
  resampler's held-back tail is flushed; after a barge-in everything held back is dropped, so
  no stale sample of the interrupted turn reaches the caller.
- Empty results are normal (a resampler may hold a whole chunk back); nothing here raises on them.
"""

from __future__ import annotations

import binascii
from typing import Final, Protocol

import attrs
import numpy as np

from archer.audio import g711
from archer.audio.resample import StreamResampler

TWILIO_RATE: Final = 8000
#: Twilio's frame: 20 ms of μ-law at 8 kHz.
FRAME_MS: Final = 20
FRAME_BYTES: Final = 160
PCM_RATES: Final = {"pcm_16000": 16000, "pcm_24000": 24000, "pcm_44100": 44100}


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class Transcoder(Protocol):
    """Converts one call's audio both ways; every method is cheap and synchronous."""

    @property
    def passthrough(self) -> bool: ...

    def to_agent(self, payload: str) -> str | None:
        """Caller audio (base64 μ-law) as the agent takes it; None while nothing is ready."""
        ...

    def to_caller(self, payload: str) -> list[str]:
        """Agent audio as base64 μ-law frames for Twilio (possibly none yet)."""
        ...

    def end_of_turn(self) -> list[str]:
        """The last frames of an agent turn (the resampler's tail, the partial frame padded)."""
        ...

    def interrupted(self) -> None:
        """The caller barged in: drop everything held back from the agent's side."""
        ...

    def silence_for_agent(self, milliseconds: int) -> str:
        """Base64 silence in the agent's format (to keep the agent's socket alive)."""
        ...


@attrs.define
class Passthrough:
    """``mulaw_8000``: both peers speak μ-law at 8 kHz; nothing to convert."""

    @property
    def passthrough(self) -> bool:
        return True

    def to_agent(self, payload: str) -> str | None:
        return payload

    def to_caller(self, payload: str) -> list[str]:
        return [payload]

    def end_of_turn(self) -> list[str]:
        return []

    def interrupted(self) -> None:
        pass

    def silence_for_agent(self, milliseconds: int) -> str:
        return _b64(bytes([g711.SILENCE]) * (TWILIO_RATE * milliseconds // 1000))


@attrs.define
class PcmTranscoder:
    """PCM on at least one side of the agent: ``uplink_rate`` is the rate the agent hears,
    ``downlink_rate`` the rate it speaks (None: μ-law at 8 kHz, nothing to convert that way)."""

    uplink_rate: int | None
    downlink_rate: int | None
    quality: str
    _uplink: StreamResampler | None = attrs.field(init=False)
    _downlink: StreamResampler | None = attrs.field(init=False)
    #: An odd trailing byte of agent PCM (half a sample) waits for the next chunk.
    _odd_byte: bytes = b""
    #: μ-law bytes short of a whole Twilio frame wait for the next chunk.
    _partial_frame: bytes = b""

    def __attrs_post_init__(self) -> None:
        up, down = self.uplink_rate, self.downlink_rate
        self._uplink = (
            None if up is None else StreamResampler(TWILIO_RATE, up, quality=self.quality)
        )
        self._downlink = (
            None if down is None else StreamResampler(down, TWILIO_RATE, quality=self.quality)
        )

    @property
    def passthrough(self) -> bool:
        return False

    def to_agent(self, payload: str) -> str | None:
        if self._uplink is None:
            return payload
        samples = g711.decode_samples(binascii.a2b_base64(payload))
        resampled = self._uplink.process(samples)
        if not len(resampled):
            return None
        return _b64(resampled.astype("<i2", copy=False).tobytes())

    def to_caller(self, payload: str) -> list[str]:
        if self._downlink is None:  # μ-law already: only cut into whole Twilio frames
            return self._frames(binascii.a2b_base64(payload))
        raw = self._odd_byte + binascii.a2b_base64(payload)
        whole = len(raw) & ~1
        self._odd_byte = raw[whole:]
        samples = np.frombuffer(raw, dtype="<i2", count=whole // 2)
        return self._frames(g711.encode_samples(self._downlink.process(samples)))

    def end_of_turn(self) -> list[str]:
        tail = b"" if self._downlink is None else g711.encode_samples(self._downlink.flush())
        frames = self._frames(tail)
        if self._partial_frame:
            rest = self._partial_frame.ljust(FRAME_BYTES, bytes([g711.SILENCE]))
            frames.append(_b64(rest))
            self._partial_frame = b""
        self._odd_byte = b""
        return frames

    def interrupted(self) -> None:
        if self._downlink is not None:
            self._downlink.reset()
        self._odd_byte = b""
        self._partial_frame = b""

    def silence_for_agent(self, milliseconds: int) -> str:
        if self.uplink_rate is None:
            return _b64(bytes([g711.SILENCE]) * (TWILIO_RATE * milliseconds // 1000))
        return _b64(bytes(2 * self.uplink_rate * milliseconds // 1000))

    def _frames(self, ulaw: bytes) -> list[str]:
        data = self._partial_frame + ulaw if self._partial_frame else ulaw
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial_frame = data[whole:]
        return [_b64(data[start : start + FRAME_BYTES]) for start in range(0, whole, FRAME_BYTES)]


def transcoder_for(
    audio_format: str, *, quality: str, output_format: str | None = None
) -> Transcoder:
    """The transcoder for an agent hearing ``audio_format`` and speaking ``output_format``
    (the same unless given: Managed agents always answer in their input format)."""
    output_format = output_format or audio_format
    for name in (audio_format, output_format):
        if name != "mulaw_8000" and name not in PCM_RATES:
            raise ValueError(f"unsupported agent audio format {name!r}")
    if audio_format == output_format == "mulaw_8000":
        return Passthrough()
    return PcmTranscoder(PCM_RATES.get(audio_format), PCM_RATES.get(output_format), quality)
