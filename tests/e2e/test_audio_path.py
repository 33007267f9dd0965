"""The audio path over real sockets: PCM agents at 16 and 44.1 kHz, and agent DTMF as tones.

The caller speaks a real speech clip; the agent answers with the same clip at its own rate.
Content is compared by normalised cross-correlation at the best lag (the resamplers delay the
audio); the threshold is 0.9, where unrelated speech scores below 0.3 and chunk-by-chunk
resampling without state (the classic crackle) scores well under it.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import soxr
import trio

from archer.audio import g711
from archer.audio.clips import speech_clip
from archer.audio.dtmf import detect_digits
from archer.cartesia import managed
from tests.e2e.peers import AgentPeer
from tests.e2e.test_call import running_system
from tests.helpers import similarity

RATES = {"pcm_16000": 16000, "pcm_44100": 44100}
CLIP = speech_clip("caller_balance")[: 160 * 100]  # two seconds of real speech


def at_rate(ulaw: bytes, rate: int) -> np.ndarray:
    return soxr.resample(g711.decode_samples(ulaw), 8000, rate).astype(np.int16)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("audio_format", sorted(RATES))
async def test_pcm_agents_hear_and_speak_through_the_transcoder(
    database_url: str, audio_format: str
) -> None:
    """PCM reaches the agent at its rate; the caller gets 160-byte μ-law frames; content kept."""
    rate = RATES[audio_format]
    answer = at_rate(CLIP, rate).astype("<i2").tobytes()

    async def echo_the_clip(peer: AgentPeer) -> None:
        create = await peer.accept_session()
        assert create.input_format == audio_format
        await peer.send(managed.turn_started(1, "assistant", 0.1))
        chunk = rate * 2 // 50  # 20 ms of 16-bit PCM
        for start in range(0, len(answer), chunk):
            await peer.send(
                managed.audio_output(base64.b64encode(answer[start : start + chunk]).decode())
            )
            await trio.sleep(0.02)
        await peer.send(
            managed.turn_ended(
                1, "assistant", "echo", interrupted=False, start_time=0.1, end_time=2.1
            )
        )

    async with running_system(database_url, echo_the_clip, audio_format=audio_format) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            for start in range(0, len(CLIP), 160):
                await caller.speak(base64.b64encode(CLIP[start : start + 160]).decode())
                await trio.sleep(0.02)
            await trio.sleep(0.5)
            await caller.stop()
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    assert peer.invalid == []
    assert caller.invalid == []
    to_agent = b"".join(base64.b64decode(e.audio) for e in peer.of(managed.AudioInput))
    assert similarity(np.frombuffer(to_agent, dtype="<i2"), at_rate(CLIP, rate)) >= 0.9
    frames = [base64.b64decode(payload) for payload in caller.media()]
    assert {len(frame) for frame in frames} == {160}
    heard = g711.decode_samples(b"".join(frames))
    assert similarity(heard, g711.decode_samples(CLIP)) >= 0.9


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_agent_dtmf_is_heard_as_tones(database_url: str) -> None:
    """``dtmf_output`` digits become tones in Twilio media that a Goertzel detector reads back."""

    async def press_keys(peer: AgentPeer) -> None:
        await peer.accept_session()
        for digit in "42*":
            await peer.send(managed.dtmf_output(digit))

    async with running_system(database_url, press_keys) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            await caller.wait_for(lambda frames: len(caller.media()) >= 30)
            await caller.stop()
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
    frames = [base64.b64decode(payload) for payload in caller.media()]
    assert {len(frame) for frame in frames} == {160}
    assert detect_digits(b"".join(frames)) == "42*"
