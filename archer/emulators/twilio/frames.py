"""What a Twilio caller sends on a media stream: the inbound messages, as JSON text.

Layer: emulator, pure (no trio, no I/O). One builder per stream numbers and writes the messages
Twilio sends to the server — ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop`` —
for the Twilio emulator, the end-to-end tests' scripted caller and the bench's callers.

Rule: it is written from Twilio's documents (../shared/reference/twilio-media-streams.md §3.1,
§3.2; ../shared/reference/twilio-asyncapi/), never from Archer's parser or builders in
``archer.twilio.frames``, so a test that drives Archer with these messages notices when Archer
and Twilio disagree. What it follows:

- ``connected`` comes first and carries no ``sequenceNumber`` and no ``streamSid``.
- ``sequenceNumber`` is one counter over every message after ``connected``: ``start`` is "1",
  the first ``media`` (or whatever follows) "2", and ``stop`` the last.
- ``media.chunk`` counts media messages from "1"; ``media.timestamp`` is ms since the stream
  started, 20 more per chunk. Real streams start it above 0 (102 and 155 ms in captures), so
  the first value is the caller's choice (``first_media_ms``).
- Numbers are strings, except ``mediaFormat.sampleRate`` and ``channels``; ``dtmf.track`` is
  ``inbound_track`` while ``media.track`` is ``inbound``.

The builder is not safe to share between tasks that send concurrently unless they build and
send under one lock: the number a message gets is the order it must go out in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = ["FRAME_MS", "CallerFrames"]

#: Twilio's cadence: one 20 ms frame of μ-law per ``media`` message.
FRAME_MS: Final = 20


@attrs.define
class CallerFrames:
    """Builds one stream's inbound messages in order, numbering them as Twilio does."""

    stream_sid: str
    account_sid: str
    call_sid: str
    #: ``media.timestamp`` of the first chunk (ms since the stream started).
    first_media_ms: int = 0
    #: The last ``sequenceNumber`` given (0: nothing after ``connected`` yet).
    sequence: int = 0
    #: The last ``media.chunk`` given.
    chunk: int = 0
    # ``media`` is the hot path (50 a second per call in the bench): its fixed middle is joined
    # once here, so each frame is one f-string with no JSON encoder.
    _media_sid: str = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Stream SIDs are ``MZ`` and hex: nothing to escape, checked here so it stays true.
        if json.dumps(self.stream_sid) != f'"{self.stream_sid}"':
            raise ValueError(f"stream SID {self.stream_sid!r} needs JSON escaping")
        self._media_sid = f'","streamSid":"{self.stream_sid}","media":{{"track":"inbound","chunk":"'

    def connected(self) -> str:
        """``connected``: the first message, unnumbered."""
        return '{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(self, parameters: Mapping[str, str]) -> str:
        """``start`` with the ``<Parameter>`` values of the TwiML as ``customParameters``."""
        return self._numbered(
            "start",
            {
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(parameters),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            },
        )

    def media(self, payload: str) -> str:
        """The next ``media`` message; ``payload`` is 20 ms of base64 μ-law (never escaped)."""
        sequence = self.sequence = self.sequence + 1
        chunk = self.chunk = self.chunk + 1
        timestamp = self.first_media_ms + (chunk - 1) * FRAME_MS
        return (
            f'{{"event":"media","sequenceNumber":"{sequence}{self._media_sid}{chunk}",'
            f'"timestamp":"{timestamp}","payload":"{payload}"}}}}'
        )

    def dtmf(self, digit: str) -> str:
        """A keypress on the caller's leg (one of 0-9, ``*``, ``#``)."""
        return self._numbered(
            "dtmf",
            {"streamSid": self.stream_sid, "dtmf": {"track": "inbound_track", "digit": digit}},
        )

    def mark(self, name: str) -> str:
        """The echo of mark ``name``: the audio sent before it has played (or was cleared)."""
        return self._numbered("mark", {"streamSid": self.stream_sid, "mark": {"name": name}})

    def stop(self) -> str:
        """``stop``: the stream is over; Twilio closes the socket after it."""
        return self._numbered(
            "stop",
            {
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            },
        )

    def numbered(self, event: str, body: Mapping[str, object]) -> str:
        """Any other message (a test's own, perhaps malformed), numbered in the same sequence."""
        return self._numbered(event, body)

    def _numbered(self, event: str, body: Mapping[str, object]) -> str:
        self.sequence += 1
        return json.dumps({"event": event, "sequenceNumber": str(self.sequence), **body})
