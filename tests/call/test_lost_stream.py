"""Issue 19: a Twilio stream that stops sending ends the call (fakes, autojump clock).

Twilio sends a media frame every 20 ms even in silence, so ``TWILIO_MEDIA_TIMEOUT`` without
one means the caller is gone, whatever the socket says. The end to end versions (a 5 MB frame,
a dropped connection, a silent socket on the real route) are in ``tests/e2e/test_lost_stream.py``.
"""

from __future__ import annotations

import attrs
import trio

from tests.call.test_session import LIMITS, Bridge
from tests.helpers import audio

QUICK = attrs.evolve(LIMITS, twilio_media_timeout=5.0)


async def test_a_stream_gone_quiet_ends_as_twilio_lost(autojump_clock: trio.abc.Clock) -> None:
    """Ten frames, then nothing: ``failed`` / ``twilio_lost`` after the media timeout, the
    agent session closed, and the duration ends at the last frame."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, QUICK)
        for tag in range(10):
            bridge.twilio.speak(audio(tag))
            await trio.sleep(0.02)
        went_quiet = trio.current_time()
        await bridge.wait_done()
        noticed = trio.current_time() - went_quiet
    call = bridge.call
    assert (call.status, call.end_reason, call.error) == (
        "failed",
        "twilio_lost",
        "no media from Twilio for 5 s",
    )
    assert 5.0 <= noticed <= 5.0 + 0.25 + 0.01
    assert call.duration_ms is not None
    assert 200 <= call.duration_ms <= 200 + 250  # up to the last frame, not to the notice
    assert call.inbound_gap_ms > 0  # the agent heard silence meanwhile
    assert bridge.connector.closed


async def test_a_stream_that_keeps_sending_is_never_lost(autojump_clock: trio.abc.Clock) -> None:
    """Twenty seconds of frames (four media timeouts): the call ends only when the caller does."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, QUICK)
        for tag in range(1000):
            bridge.twilio.speak(audio(tag))
            await trio.sleep(0.02)
        assert not bridge.done.is_set()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert (bridge.call.status, bridge.call.end_reason) == ("completed", "caller_hangup")
    assert bridge.call.frames_in == 1000
