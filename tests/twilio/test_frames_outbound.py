"""``parse_outbound``: what a media-stream server sends Twilio, checked as strictly as Twilio."""

from __future__ import annotations

import json

import pytest

from archer.errors import TwilioProtocolError
from archer.twilio.frames import (
    OutboundClear,
    OutboundFrames,
    OutboundMark,
    OutboundMedia,
    parse_outbound,
)
from tests.contract.schemas import validate_twilio_outbound

SID = "MZ" + "ab" * 16
PAYLOAD = "//////////8="


def test_archer_own_frames_parse_back() -> None:
    """Every message ``OutboundFrames`` builds is accepted and read back as it was built."""
    frames = OutboundFrames(SID)
    assert parse_outbound(frames.media(PAYLOAD), stream_sid=SID) == OutboundMedia(PAYLOAD)
    assert parse_outbound(frames.mark('say "hi"'), stream_sid=SID) == OutboundMark('say "hi"')
    assert parse_outbound(frames.clear, stream_sid=SID) == OutboundClear()


@pytest.mark.parametrize(
    "frame",
    [
        {"event": "media", "streamSid": SID, "media": {"payload": PAYLOAD}},
        {"event": "mark", "streamSid": SID, "mark": {"name": "m1"}},
        {"event": "clear", "streamSid": SID},
    ],
)
def test_what_it_accepts_the_published_schema_accepts(frame: dict[str, object]) -> None:
    """The three accepted shapes are exactly Twilio's published outbound messages."""
    text = json.dumps(frame)
    validate_twilio_outbound(text)
    assert parse_outbound(text, stream_sid=SID) is not None


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (b'{"event": "clear"}', "binary frame"),
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"streamSid": "' + SID + '"}', "no event name"),
        ('{"event": "play", "streamSid": "' + SID + '"}', "unknown event 'play'"),
        ('{"event": "clear"}', "clear: missing streamSid"),
        ('{"event": "clear", "streamSid": "' + SID + '", "x": 1}', "clear: unexpected x"),
        ('{"event": "clear", "streamSid": "MZother"}', "not this stream's"),
        ('{"event": "clear", "streamSid": 7}', "streamSid is not a string"),
        ('{"event": "media", "streamSid": "' + SID + '"}', "media: missing media"),
        ('{"event": "media", "streamSid": "' + SID + '", "media": "x"}', "not an object"),
        ('{"event": "media", "streamSid": "' + SID + '", "media": {}}', "missing payload"),
        (
            '{"event": "media", "streamSid": "' + SID + '", "media": {"payload": "//8=", '
            '"track": "outbound"}}',
            "media.media: unexpected track",
        ),
        (
            '{"event": "media", "streamSid": "' + SID + '", "media": {"payload": "%%%"}}',
            "not valid base64",
        ),
        (
            '{"event": "media", "streamSid": "' + SID + '", "media": {"payload": 5}}',
            "media.payload is missing or not a string",
        ),
        (
            '{"event": "mark", "streamSid": "' + SID + '", "mark": {"name": "a", "b": "c"}}',
            "mark.mark: unexpected b",
        ),
        ('{"event": "mark", "streamSid": "' + SID + '", "mark": {"name": 3}}', "mark.name"),
        (
            '{"event": "mark", "streamSid": "' + SID + '", "mark": {"name": "a"}, '
            '"sequenceNumber": "4"}',
            "mark: unexpected sequenceNumber",
        ),
    ],
)
def test_what_twilio_would_flag_as_31951_is_refused(message: str | bytes, complaint: str) -> None:
    """Each kind of bad message raises ``TwilioProtocolError`` naming what is wrong."""
    with pytest.raises(TwilioProtocolError, match=complaint):
        parse_outbound(message, stream_sid=SID)


def test_unpadded_base64_is_refused() -> None:
    """Base64 without its padding is not valid base64, as Twilio's decoder sees it."""
    frame = json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "//8"}})
    with pytest.raises(TwilioProtocolError, match="base64"):
        parse_outbound(frame, stream_sid=SID)
