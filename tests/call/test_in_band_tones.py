"""Keypad tones in the caller's audio (issue 21): withheld keys do not reach the agent as sound.

``run_call`` against the memory-channel fakes, autojump clock. The caller's audio is real
speech and the emulator's keypad tones (``archer.emulators.twilio.keypad_tones``, written from
ITU-T Q.23), each tone starting mid-frame; every key is also a ``dtmf`` message, as Twilio
sends it. What the agent received is searched with ``archer.audio.dtmf.detect_digits``.
"""

from __future__ import annotations

import base64

import pytest
import trio
import trio.testing

from archer.audio.clips import speech_clip
from archer.audio.dtmf import detect_digits
from archer.emulators.twilio.keypad_tones import keypad_tone
from tests.call.test_session import LIMITS, Bridge

FRAME = 160
KEYS = "4821#"
SPEECH = speech_clip("caller_balance")


def frames(audio: bytes) -> list[str]:
    """20 ms base64 frames, the last padded with silence."""
    audio += bytes([0xFF]) * (-len(audio) % FRAME)
    return [base64.b64encode(audio[i : i + FRAME]).decode() for i in range(0, len(audio), FRAME)]


def received_audio(bridge: Bridge) -> bytes:
    return b"".join(base64.b64decode(payload) for payload in bridge.agent.sent("audio"))


def is_silence(payload: str) -> bool:
    return set(base64.b64decode(payload)) <= {0xFF}


async def keyed_call(bridge: Bridge) -> None:
    """Speech, the keys (message and tone), a pause, speech; one frame per 20 ms."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for payload in frames(SPEECH[:4000]):
            bridge.twilio.speak(payload)
            await trio.sleep(0.02)
        for key in KEYS:
            bridge.twilio.press(key)
            for payload in frames(keypad_tone(key) + bytes([0xFF]) * 800):
                bridge.twilio.speak(payload)
                await trio.sleep(0.02)
        for payload in frames(SPEECH[4000:8000]):
            bridge.twilio.speak(payload)
            await trio.sleep(0.02)
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()


async def test_withheld_keys_do_not_reach_the_agent_as_tones(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``DTMF_TO_AGENT=false``: no ``dtmf_input``, no tone in any byte the agent got, and the
    caller's speech before and after the keys arrives untouched."""
    bridge = Bridge(dtmf_to_agent=False)
    await keyed_call(bridge)
    heard = received_audio(bridge)
    assert bridge.agent.sent("dtmf") == []
    assert detect_digits(heard) == ""
    spoken = frames(SPEECH[:4000]) + frames(SPEECH[4000:8000])
    forwarded = [payload for payload in bridge.agent.sent("audio") if not is_silence(payload)]
    assert forwarded  # the caller's speech arrived ...
    # ... every sound of it, in order, and nothing else but a tone's undetected first frames.
    assert [payload for payload in forwarded if payload in spoken] == [
        payload for payload in spoken if not is_silence(payload)
    ]
    assert len([payload for payload in forwarded if payload not in spoken]) <= len(KEYS)
    # Each tone (100 ms, starting mid-frame) spans 6 frames; its first may pass unnoticed
    # (the check sees the tone too late), the rest and the hangover are silenced.
    assert bridge.call.dtmf_dropped == len(KEYS)
    assert 5 * len(KEYS) <= bridge.call.frames_silenced_for_tones <= 8 * len(KEYS)
    assert (
        bridge.call.summary()["frames_silenced_for_tones"] == bridge.call.frames_silenced_for_tones
    )


async def test_with_dtmf_to_agent_the_tones_pass(autojump_clock: trio.abc.Clock) -> None:
    """``DTMF_TO_AGENT=true``: the agent gets the keys anyway, so the audio is not checked."""
    bridge = Bridge(dtmf_to_agent=True)
    await keyed_call(bridge)
    assert bridge.agent.sent("dtmf") == list(KEYS)
    assert detect_digits(received_audio(bridge)) == KEYS
    assert bridge.call.frames_silenced_for_tones == 0


@pytest.mark.parametrize("audio_format", ["pcm_16000"])
async def test_a_pcm_agent_gets_silence_in_its_own_format(
    audio_format: str, autojump_clock: trio.abc.Clock
) -> None:
    """With a PCM agent the silenced frames are PCM silence of the same length."""
    bridge = Bridge(dtmf_to_agent=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, LIMITS, audio_format)
        for payload in frames(keypad_tone("5", onset_samples=0)):
            bridge.twilio.speak(payload)
            await trio.sleep(0.02)
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    sent = [base64.b64decode(payload) for payload in bridge.agent.sent("audio")]
    assert bridge.call.frames_silenced_for_tones == 5
    assert sent
    assert all(chunk == bytes(len(chunk)) for chunk in sent)  # 16-bit zeros: PCM silence
