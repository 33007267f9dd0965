"""Twilio Media Streams wire format: parse what Twilio sends, build what Archer sends back.

Layer: pure protocol (sans-I/O). No trio, quart, sqlalchemy or structlog; nothing here logs.

Rules: ``parse_frame`` turns one text message into one frozen event or raises
``TwilioProtocolError`` naming what is wrong. Unknown fields are ignored (Twilio adds fields
without notice); unknown events raise, and the caller decides whether that ends the call.
Audio stays base64 text: in μ-law passthrough the payload string is forwarded untouched, so it
is checked for valid base64 here but never kept decoded.

Reference: ../shared/reference/twilio-media-streams.md §3.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Final

import attrs

from archer.errors import TwilioProtocolError


@attrs.frozen(slots=True)
class Connected:
    """The first message on the socket."""

    protocol: str
    version: str


@attrs.frozen(slots=True)
class Start:
    """Stream metadata, once, right after ``connected``."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str]
    encoding: str
    sample_rate: int
    channels: int


@attrs.frozen(slots=True)
class Media:
    """20 ms of the caller's audio: base64 μ-law, 8 kHz (``timestamp`` in ms since start)."""

    payload: str
    timestamp: int
    chunk: int


@attrs.frozen(slots=True)
class Dtmf:
    """A key the caller pressed."""

    digit: str


@attrs.frozen(slots=True)
class Mark:
    """Echo of a mark Archer sent: everything queued before it has played or was cleared."""

    name: str


@attrs.frozen(slots=True)
class Stop:
    """The stream ended (the caller hung up or the call moved on); the socket closes next."""

    call_sid: str


TwilioEvent = Media | Dtmf | Mark | Stop
TwilioFrame = Connected | Start | TwilioEvent

DTMF_DIGITS: Final = frozenset("0123456789*#")


def parse_frame(message: str | bytes | None) -> TwilioFrame:
    """Parse one media-stream message.

    Raises:
        TwilioProtocolError: not JSON, not an object, an unknown event, or a required field
            missing or of the wrong type.
    """
    if not isinstance(message, str):
        # Twilio only sends text frames; a binary frame is a peer that is not Twilio. (quart-trio
        # hands an empty binary frame on as None.)
        raise TwilioProtocolError("binary frame on a media stream")
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        raise TwilioProtocolError("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise TwilioProtocolError("frame is not a JSON object")
    event = frame.get("event")
    # Media first: it is 50 of every 50-and-a-bit frames per second.
    if event == "media":
        media = _object(frame, "media")
        payload = _text(media, "payload", "media")
        _check_base64(payload)
        return Media(
            payload=payload,
            timestamp=_number_text(media, "timestamp"),
            chunk=_number_text(media, "chunk"),
        )
    if event == "mark":
        return Mark(name=_text(_object(frame, "mark"), "name", "mark"))
    if event == "dtmf":
        digit = _text(_object(frame, "dtmf"), "digit", "dtmf")
        if digit not in DTMF_DIGITS:
            raise TwilioProtocolError(f"dtmf.digit {digit[:8]!r} is not a DTMF digit")
        return Dtmf(digit=digit)
    if event == "stop":
        stop = frame.get("stop")
        call_sid = stop.get("callSid", "") if isinstance(stop, dict) else ""
        return Stop(call_sid=call_sid if isinstance(call_sid, str) else "")
    if event == "start":
        return _parse_start(frame)
    if event == "connected":
        return Connected(
            protocol=_text(frame, "protocol", "connected"),
            version=_text(frame, "version", "connected"),
        )
    if isinstance(event, str):
        raise TwilioProtocolError(f"unknown event {event[:40]!r}")
    raise TwilioProtocolError("frame has no event name")


def _parse_start(frame: Mapping[str, object]) -> Start:
    start = _object(frame, "start")
    media_format = _object(start, "mediaFormat")
    tracks = start.get("tracks", ["inbound"])
    params = start.get("customParameters", {})
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise TwilioProtocolError("start.tracks is not a list of strings")
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise TwilioProtocolError("start.customParameters is not an object of strings")
    sample_rate = media_format.get("sampleRate")
    channels = media_format.get("channels")
    if not isinstance(sample_rate, int) or not isinstance(channels, int):
        raise TwilioProtocolError("start.mediaFormat has no numeric sampleRate/channels")
    return Start(
        stream_sid=_text(start, "streamSid", "start"),
        call_sid=_text(start, "callSid", "start"),
        account_sid=_text(start, "accountSid", "start"),
        tracks=tuple(tracks),
        custom_parameters=dict(params),
        encoding=_text(media_format, "encoding", "start.mediaFormat"),
        sample_rate=sample_rate,
        channels=channels,
    )


def _object(parent: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{key} is missing or not an object")
    return value


def _text(parent: Mapping[str, object], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{where}.{key} is missing or not a string")
    return value


def _number_text(media: Mapping[str, object], key: str) -> int:
    # Twilio sends numbers as strings ("155"); tolerate a JSON number, refuse anything else.
    value = media.get(key)
    # isascii(): str.isdigit() also accepts "²" and "①", which int() refuses.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TwilioProtocolError(f"media.{key} is missing or not a number")


def _check_base64(payload: str) -> None:
    try:
        binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise TwilioProtocolError("media.payload is not valid base64") from None


@attrs.frozen
class OutboundFrames:
    """Builds the three messages Archer may send on one stream (``media``, ``mark``, ``clear``).

    The JSON around the payload is fixed per stream, so it is rendered once here and each media
    frame is two string concatenations: base64 never needs escaping.
    """

    stream_sid: str
    _media_prefix: str = attrs.field(init=False)
    _mark_prefix: str = attrs.field(init=False)
    clear: str = attrs.field(init=False)

    @_media_prefix.default
    def _render_media_prefix(self) -> str:
        sid = json.dumps(self.stream_sid)
        return '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'

    @_mark_prefix.default
    def _render_mark_prefix(self) -> str:
        return '{"event":"mark","streamSid":' + json.dumps(self.stream_sid) + ',"mark":{"name":'

    @clear.default
    def _render_clear(self) -> str:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid}, separators=(",", ":"))

    def media(self, payload: str) -> str:
        """A ``media`` message carrying base64 μ-law ``payload``."""
        return self._media_prefix + payload + '"}}'

    def mark(self, name: str) -> str:
        """A ``mark`` message; Twilio echoes ``name`` when the audio before it has played."""
        return self._mark_prefix + json.dumps(name) + "}}"
