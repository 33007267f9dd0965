"""``OutboundFrames``: what Archer sends Twilio is what Twilio's schema and its emulator accept."""

from __future__ import annotations

import base64

import pytest

from archer.emulators.twilio.server_messages import (
    ServerClear,
    ServerMark,
    ServerMedia,
    read_server_message,
)
from archer.twilio.frames import OutboundFrames
from tests.contract.schemas import validate_twilio_outbound

SID = "MZ" + "ab" * 16
AUDIO = bytes(range(256)) * 2


@pytest.mark.parametrize("name", ["m1", 'say "hi"', "naïve ✓", "back\\slash"])
def test_every_message_archer_builds_is_what_twilio_documents(name: str) -> None:
    """Each built message validates against Twilio's published schema and reads back as built."""
    frames = OutboundFrames(SID)
    payload = base64.b64encode(AUDIO).decode("ascii")
    for text in (frames.media(payload), frames.mark(name), frames.clear):
        validate_twilio_outbound(text)
    assert read_server_message(frames.media(payload), stream_sid=SID) == ServerMedia(AUDIO)
    assert read_server_message(frames.mark(name), stream_sid=SID) == ServerMark(name)
    assert read_server_message(frames.clear, stream_sid=SID) == ServerClear()
