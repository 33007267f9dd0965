"""What Twilio reads from a media-stream server (``media``, ``mark``, ``clear``), as Twilio checks.

Layer: emulator, pure (no trio, no I/O). The emulated stream (``archer.emulators.twilio.stream``)
reads every message Archer sends through ``read_server_message``.

Rule: it is written from Twilio's documents (../shared/reference/twilio-media-streams.md §3.3;
../shared/reference/twilio-asyncapi/), never from Archer's builders in ``archer.twilio.frames``,
so an end-to-end test notices when Archer writes something real Twilio would refuse. What Twilio
flags with warning 31951 (logged once per stream; the message is ignored, the call goes on) is a
``ServerMessageError``:

- a binary frame, text that is not a JSON object, or an event other than the three;
- a missing or undeclared key at any level: the server's messages carry no ``track``,
  ``chunk``, ``timestamp`` or ``sequenceNumber``;
- another stream's ``streamSid``;
- a ``media.payload`` that is not padded base64 (the audio is raw μ-law, 8 kHz).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = [
    "ServerClear",
    "ServerMark",
    "ServerMedia",
    "ServerMessage",
    "ServerMessageError",
    "read_server_message",
]


class ServerMessageError(ValueError):
    """A message Twilio would answer with warning 31951; the text says what is wrong."""


@attrs.frozen(slots=True)
class ServerMedia:
    """Audio to play to the caller, queued behind what is already playing."""

    audio: bytes


@attrs.frozen(slots=True)
class ServerMark:
    """A label to echo once everything queued before it has played (or was cleared)."""

    name: str


@attrs.frozen(slots=True)
class ServerClear:
    """Drop everything queued for playback and echo every pending mark at once."""


ServerMessage = ServerMedia | ServerMark | ServerClear

#: Per event, the keys of the message and of its body (reference §3.3): exactly these.
_KEYS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    "media": (frozenset({"event", "streamSid", "media"}), frozenset({"payload"})),
    "mark": (frozenset({"event", "streamSid", "mark"}), frozenset({"name"})),
    "clear": (frozenset({"event", "streamSid"}), frozenset()),
}


def read_server_message(message: str | bytes, *, stream_sid: str) -> ServerMessage:
    """Read one message the server sent on stream ``stream_sid``.

    Raises:
        ServerMessageError: Twilio would flag it (31951); see the module's rules.
    """
    if isinstance(message, bytes):
        raise ServerMessageError("a binary frame: Twilio reads JSON text frames only")
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        raise ServerMessageError("not JSON") from None
    if not isinstance(frame, dict):
        raise ServerMessageError("not a JSON object")
    event = frame.get("event")
    if not isinstance(event, str) or event not in _KEYS:
        raise ServerMessageError(f"event {str(event)[:40]!r} is not media, mark or clear")
    message_keys, body_keys = _KEYS[event]
    _only(frame, message_keys, event)
    if frame["streamSid"] != stream_sid:
        sid = str(frame["streamSid"])[:40]
        raise ServerMessageError(f"{event}: streamSid {sid!r} is another stream's")
    if event == "clear":
        return ServerClear()
    body = frame[event]
    if not isinstance(body, dict):
        raise ServerMessageError(f"{event}: {event} is not an object")
    _only(body, body_keys, f"{event}.{event}")
    if event == "mark":
        name = body["name"]
        if not isinstance(name, str):
            raise ServerMessageError("mark: mark.name is not a string")
        return ServerMark(name)
    payload = body["payload"]
    if not isinstance(payload, str):
        raise ServerMessageError("media: media.payload is not a string")
    try:
        return ServerMedia(binascii.a2b_base64(payload, strict_mode=True))
    except (binascii.Error, ValueError):
        raise ServerMessageError("media: media.payload is not padded base64") from None


def _only(obj: Mapping[str, object], keys: frozenset[str], where: str) -> None:
    missing = sorted(keys - obj.keys())
    if missing:
        raise ServerMessageError(f"{where}: missing {', '.join(missing)}")
    extra = sorted(obj.keys() - keys)
    if extra:
        raise ServerMessageError(f"{where}: undeclared {', '.join(key[:40] for key in extra)}")
