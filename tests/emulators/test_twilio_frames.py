"""The Twilio caller's frame builder against Twilio's documents, and Archer's parser against it.

The expected messages are spelled out here from ../shared/reference/twilio-media-streams.md §3.2
(not produced by any builder), every built message is validated against Twilio's AsyncAPI
document, and Archer's ``parse_frame`` must read each back: if Archer and Twilio ever disagree,
one of these fails.
"""

from __future__ import annotations

import base64
import json

import pytest

from archer.emulators.twilio.frames import CallerFrames
from archer.twilio import frames as archer_frames
from tests.contract.schemas import validate_twilio_inbound

STREAM_SID = "MZ" + "1" * 32
ACCOUNT_SID = "AC" + "2" * 32
CALL_SID = "CA" + "3" * 32
PAYLOAD = base64.b64encode(bytes([0xFF]) * 160).decode()


def a_stream() -> tuple[CallerFrames, list[str]]:
    """One whole stream as a caller sends it: every kind of message, in a legal order."""
    frames = CallerFrames(STREAM_SID, ACCOUNT_SID, CALL_SID, first_media_ms=100)
    sent = [
        frames.connected(),
        frames.start({"token": "abc"}),
        frames.media(PAYLOAD),
        frames.dtmf("#"),
        frames.media(PAYLOAD),
        frames.mark('say "hi"\\ 1'),
        frames.stop(),
    ]
    return frames, sent


def test_the_messages_are_the_ones_twilio_documents() -> None:
    _, sent = a_stream()

    assert [json.loads(text) for text in sent] == [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound"],
                "customParameters": {"token": "abc"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": STREAM_SID,
        },
        {
            "event": "media",
            "sequenceNumber": "2",
            "streamSid": STREAM_SID,
            "media": {"track": "inbound", "chunk": "1", "timestamp": "100", "payload": PAYLOAD},
        },
        {
            "event": "dtmf",
            "sequenceNumber": "3",
            "streamSid": STREAM_SID,
            "dtmf": {"track": "inbound_track", "digit": "#"},
        },
        {
            "event": "media",
            "sequenceNumber": "4",
            "streamSid": STREAM_SID,
            "media": {"track": "inbound", "chunk": "2", "timestamp": "120", "payload": PAYLOAD},
        },
        {
            "event": "mark",
            "sequenceNumber": "5",
            "streamSid": STREAM_SID,
            "mark": {"name": 'say "hi"\\ 1'},
        },
        {
            "event": "stop",
            "sequenceNumber": "6",
            "streamSid": STREAM_SID,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
        },
    ]


def test_every_message_validates_against_twilios_asyncapi_document() -> None:
    _, sent = a_stream()
    for text in sent:
        validate_twilio_inbound(text)


def test_archers_parser_reads_back_what_the_caller_sends() -> None:
    _, sent = a_stream()

    parsed = [archer_frames.parse_frame(text) for text in sent]

    assert [type(event) for event in parsed] == [
        archer_frames.Connected,
        archer_frames.Start,
        archer_frames.Media,
        archer_frames.Dtmf,
        archer_frames.Media,
        archer_frames.Mark,
        archer_frames.Stop,
    ]
    start, first_media, mark = parsed[1], parsed[2], parsed[5]
    assert isinstance(start, archer_frames.Start)
    assert (start.stream_sid, start.call_sid, dict(start.custom_parameters)) == (
        STREAM_SID,
        CALL_SID,
        {"token": "abc"},
    )
    assert isinstance(first_media, archer_frames.Media)
    assert (first_media.payload, first_media.chunk, first_media.timestamp) == (PAYLOAD, 1, 100)
    assert isinstance(mark, archer_frames.Mark)
    assert mark.name == 'say "hi"\\ 1'


def test_the_builder_counts_what_it_gave_out() -> None:
    frames, _ = a_stream()
    assert (frames.sequence, frames.chunk) == (6, 2)
    assert json.loads(frames.numbered("transcription", {"streamSid": STREAM_SID})) == {
        "event": "transcription",
        "sequenceNumber": "7",
        "streamSid": STREAM_SID,
    }


def test_a_stream_sid_that_would_need_escaping_is_refused() -> None:
    with pytest.raises(ValueError, match="needs JSON escaping"):
        CallerFrames('MZ"', ACCOUNT_SID, CALL_SID)
