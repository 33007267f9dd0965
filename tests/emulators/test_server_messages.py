"""The Twilio emulator's reader of what a server sends: what it accepts, what it flags (31951)."""

from __future__ import annotations

import json

import pytest

from archer.emulators.twilio.server_messages import (
    ServerClear,
    ServerMark,
    ServerMedia,
    ServerMessageError,
    read_server_message,
)
from tests.contract.schemas import validate_twilio_outbound

SID = "MZ" + "ab" * 16
PAYLOAD = "//////////8="


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
    assert read_server_message(text, stream_sid=SID) in (
        ServerMedia(b"\xff" * 8),
        ServerMark("m1"),
        ServerClear(),
    )


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (b'{"event": "clear"}', "binary frame"),
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"streamSid": "' + SID + '"}', "is not media, mark or clear"),
        ('{"event": "play", "streamSid": "' + SID + '"}', "event 'play' is not"),
        ('{"event": "clear"}', "clear: missing streamSid"),
        ('{"event": "clear", "streamSid": "' + SID + '", "x": 1}', "clear: undeclared x"),
        ('{"event": "clear", "streamSid": "MZother"}', "another stream's"),
        ('{"event": "clear", "streamSid": 7}', "streamSid '7' is another"),
        ('{"event": "media", "streamSid": "' + SID + '"}', "media: missing media"),
        ('{"event": "media", "streamSid": "' + SID + '", "media": "x"}', "not an object"),
        ('{"event": "media", "streamSid": "' + SID + '", "media": {}}', "missing payload"),
        (
            '{"event": "media", "streamSid": "' + SID + '", "media": {"payload": "//8=", '
            '"track": "outbound"}}',
            "media.media: undeclared track",
        ),
        (
            '{"event": "media", "streamSid": "' + SID + '", "media": {"payload": "%%%"}}',
            "not padded base64",
        ),
        (
            '{"event": "media", "streamSid": "' + SID + '", "media": {"payload": 5}}',
            "media.payload is not a string",
        ),
        (
            '{"event": "mark", "streamSid": "' + SID + '", "mark": {"name": "a", "b": "c"}}',
            "mark.mark: undeclared b",
        ),
        (
            '{"event": "mark", "streamSid": "' + SID + '", "mark": {"name": 3}}',
            "mark.name is not a string",
        ),
        (
            '{"event": "mark", "streamSid": "' + SID + '", "mark": {"name": "a"}, '
            '"sequenceNumber": "4"}',
            "mark: undeclared sequenceNumber",
        ),
    ],
)
def test_what_twilio_would_flag_as_31951_is_refused(message: str | bytes, complaint: str) -> None:
    """Each kind of bad message raises ``ServerMessageError`` naming what is wrong."""
    with pytest.raises(ServerMessageError, match=complaint):
        read_server_message(message, stream_sid=SID)


def test_unpadded_base64_is_refused() -> None:
    """Base64 without its padding is not valid base64, as Twilio's decoder sees it."""
    frame = json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "//8"}})
    with pytest.raises(ServerMessageError, match="base64"):
        read_server_message(frame, stream_sid=SID)
