"""Twilio's playout buffer for a bidirectional media stream, as a pure model.

Layer: emulator, pure (no trio, no I/O). The Twilio emulator owns one per stream and drives it
from its 20 ms clock; tests drive it directly.

Rules (reference ../shared/reference/twilio-media-streams.md §3.4 and §3.5 item 5):

- Outbound audio is queued and played in the order received, 8 bytes (samples) per ms.
- A mark is queued at the current end of the buffer and echoed once the drain has passed it;
  a mark queued on an empty buffer is echoed at the next tick (Twilio says "immediately"; on
  the emulator's clock that is the next tick).
- ``clear`` drops the queued audio and every pending mark comes back at once, in order. Marks
  are therefore "played or discarded", never only "played".
- ``tick`` always returns exactly ``8 * ms`` bytes of what the caller heard: queued audio, then
  μ-law silence (0xFF) once the buffer runs dry, so the concatenated ticks are the caller's
  real-time timeline.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs

from archer.audio.g711 import SILENCE

__all__ = ["BYTES_PER_MS", "PlayoutBuffer", "Tick"]

#: μ-law at 8 kHz: one byte per sample, eight samples per millisecond.
BYTES_PER_MS: Final = 8


@attrs.frozen
class Tick:
    """What one tick of the playout clock produced."""

    #: Exactly ``8 * ms`` μ-law bytes: the audio that played, padded with silence.
    heard: bytes = attrs.field(repr=lambda heard: f"<{len(heard)} bytes>")
    #: Marks the drain passed during this tick, in the order they were queued.
    echoed: list[str]
    #: How many bytes of ``heard`` were queued audio (the rest is padding).
    played: int = 0


@attrs.define
class PlayoutBuffer:
    """Queued outbound audio and marks for one stream; see the module docstring."""

    _audio: bytearray = attrs.Factory(bytearray)
    #: Pending marks as (position, name): position counts bytes ever queued (not cleared).
    _marks: deque[tuple[int, str]] = attrs.Factory(deque)
    #: Bytes ever queued, and bytes ever taken out (played or cleared); both only grow.
    _queued_total: int = 0
    _drained_total: int = 0

    @property
    def queued_bytes(self) -> int:
        """Audio waiting to play, in bytes (8 per ms)."""
        return len(self._audio)

    @property
    def playing(self) -> bool:
        """Whether audio is queued, i.e. the caller hears the agent on the next tick."""
        return bool(self._audio)

    @property
    def pending_marks(self) -> list[str]:
        """Marks not yet echoed, in order."""
        return [name for _, name in self._marks]

    def append(self, ulaw: bytes) -> None:
        """Queue μ-law audio behind everything already queued."""
        self._audio += ulaw
        self._queued_total += len(ulaw)

    def mark(self, name: str) -> None:
        """Queue mark ``name`` at the current end of the buffer."""
        self._marks.append((self._queued_total, name))

    def clear(self) -> list[str]:
        """Drop the queued audio; every pending mark, which Twilio echoes at once."""
        self._drained_total += len(self._audio)
        self._audio.clear()
        echoed = [name for _, name in self._marks]
        self._marks.clear()
        return echoed

    def tick(self, ms: int) -> Tick:
        """Play ``ms`` milliseconds: the audio heard and the marks the drain passed.

        Raises:
            ValueError: ``ms`` is negative.
        """
        if ms < 0:
            raise ValueError(f"cannot play {ms} ms")
        wanted = BYTES_PER_MS * ms
        played = bytes(self._audio[:wanted])
        # Deleting from the front of a bytearray is cheap in CPython (it moves a start offset).
        del self._audio[:wanted]
        self._drained_total += len(played)
        echoed: list[str] = []
        while self._marks and self._marks[0][0] <= self._drained_total:
            echoed.append(self._marks.popleft()[1])
        heard = played + bytes([SILENCE]) * (wanted - len(played))
        return Tick(heard=heard, echoed=echoed, played=len(played))
