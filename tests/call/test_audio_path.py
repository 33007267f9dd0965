"""The audio path inside a call: what the caller heard of each agent turn, late audio of an
interrupted turn, DTMF tones, silence when Twilio stalls, and PCM agents.

``bridge_call`` on memory-channel fakes with trio's autojump clock.
"""

from __future__ import annotations

import base64

import numpy as np
import soxr
import trio
import trio.testing

from archer.audio import g711
from archer.audio.clips import speech_clip
from archer.audio.dtmf import detect_digits
from archer.call.events import TurnEnded, TurnStarted
from tests.call.test_session import LIMITS, Bridge
from tests.helpers import audio, similarity


def start_turn(bridge: Bridge, turn: int, role: str = "assistant") -> None:
    bridge.agent.emit(TurnStarted(turn, role, float(turn)))  # type: ignore[arg-type]


def end_turn(bridge: Bridge, turn: int, role: str = "assistant", text: str = "") -> None:
    bridge.agent.emit(TurnEnded(turn, role, text, False, float(turn), turn + 0.5))  # type: ignore[arg-type]


def echo_all_marks(bridge: Bridge) -> None:
    for name in bridge.twilio.sent("mark"):
        bridge.twilio.echo_mark(name)


async def test_heard_ms_is_what_the_echoed_marks_confirm(autojump_clock: trio.abc.Clock) -> None:
    """A fully played turn is heard in full; a cut one only up to the last mark Twilio echoed."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        start_turn(bridge, 1)
        for tag in range(10):  # 200 ms
            bridge.agent.say(audio(tag))
        end_turn(bridge, 1, text="played in full")
        await trio.testing.wait_all_tasks_blocked()
        echo_all_marks(bridge)  # the whole turn played
        start_turn(bridge, 2)
        for tag in range(25):  # 500 ms queued
            bridge.agent.say(audio(tag))
        await trio.testing.wait_all_tasks_blocked()
        marks = bridge.twilio.sent("mark")[2:]  # this turn's progress marks
        assert len(marks) == 5  # one per 100 ms
        for name in marks[:3]:  # Twilio played 300 ms of it ...
            bridge.twilio.echo_mark(name)
        await trio.testing.wait_all_tasks_blocked()
        bridge.agent.clear()  # ... then the caller barged in
        await trio.testing.wait_all_tasks_blocked()
        for name in marks[3:]:  # the echoes Twilio sends after a clear: discarded, not heard
            bridge.twilio.echo_mark(name)
        bridge.twilio.stop()
        await bridge.wait_done()
    turns = {turn.turn: turn for turn in bridge.call.snapshot().turns}
    assert turns[1].heard_ms == 200
    assert turns[2].heard_ms == 300
    assert bridge.call.barge_ins == 1


async def test_a_turn_nobody_heard_is_heard_for_0_ms(autojump_clock: trio.abc.Clock) -> None:
    """An agent turn cleared before any mark came back was heard for 0 ms, not "unknown"."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        start_turn(bridge, 1)
        bridge.agent.say(audio(1))
        await trio.testing.wait_all_tasks_blocked()
        bridge.agent.clear()
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    [turn] = bridge.call.snapshot().turns
    assert turn.heard_ms == 0


async def test_late_audio_of_an_interrupted_turn_is_dropped_until_the_caller_finishes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """After a clear the old turn's audio never reaches Twilio; the answer to the caller does."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        start_turn(bridge, 1)
        bridge.agent.say(audio(1))
        await trio.testing.wait_all_tasks_blocked()
        bridge.agent.clear()
        bridge.agent.say(audio(2))  # stale: still the interrupted turn
        start_turn(bridge, 2, role="user")
        bridge.agent.say(audio(3))  # stale too: the caller is still talking
        end_turn(bridge, 2, role="user", text="wait")
        bridge.agent.say(audio(4))  # the answer, even without a turn_started first
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert bridge.twilio.sent("media") == [audio(1), audio(4)]
    assert bridge.twilio.outbound.index(("clear", "")) == 1


async def test_agent_dtmf_reaches_the_caller_as_tones(autojump_clock: trio.abc.Clock) -> None:
    """Digits the agent sends become tones in whole 20 ms frames that a detector reads back."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for digit in "19#":
            bridge.agent.dtmf(digit)
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    frames = [base64.b64decode(payload) for payload in bridge.twilio.sent("media")]
    assert {len(frame) for frame in frames} == {160}
    assert detect_digits(b"".join(frames)) == "19#"


async def test_a_stalled_twilio_stream_is_filled_with_silence(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Caller audio stalls for a second: the agent gets silence, and the gap is counted."""
    bridge = Bridge()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for tag in range(10):
            bridge.twilio.speak(audio(tag))
            await trio.sleep(0.02)
        await trio.sleep(1.0)  # Twilio's audio stalls
        bridge.twilio.stop()
        await bridge.wait_done()
    silence = [p for p in bridge.agent.sent("audio") if p not in {audio(t) for t in range(10)}]
    assert silence
    assert set(b"".join(base64.b64decode(p) for p in silence)) == {g711.SILENCE}  # type: ignore[arg-type]
    assert 750 <= bridge.call.inbound_gap_ms <= 1250


async def test_pcm_agents_get_pcm_and_the_caller_gets_whole_mulaw_frames(
    autojump_clock: trio.abc.Clock,
) -> None:
    """With pcm_16000, caller speech reaches the agent upsampled and agent speech comes back as
    160-byte μ-law frames; both keep their content (correlation ≥ 0.9 after the resampler delay)."""
    bridge = Bridge()
    clip = speech_clip("caller_balance")[: 160 * 100]  # 2 s of real speech

    async def run() -> None:
        await bridge.run(LIMITS, audio_format="pcm_16000")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        for start in range(0, len(clip), 160):
            bridge.twilio.speak(base64.b64encode(clip[start : start + 160]).decode())
            await trio.sleep(0.02)
        await trio.testing.wait_all_tasks_blocked()
        # The agent answers with the same speech at 16 kHz, in odd-sized chunks.
        pcm16k = soxr.resample(g711.decode_samples(clip), 8000, 16000).astype("<i2").tobytes()
        start_turn(bridge, 1)
        for start in range(0, len(pcm16k), 1001):  # odd sizes, at about speaking pace
            bridge.agent.say(base64.b64encode(pcm16k[start : start + 1001]).decode())
            await trio.sleep(0.03)
        end_turn(bridge, 1)
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    to_agent = np.frombuffer(
        b"".join(base64.b64decode(p) for p in bridge.agent.sent("audio")),  # type: ignore[arg-type]
        dtype="<i2",
    )
    assert similarity(to_agent, pcm16k_of(clip)) >= 0.9
    frames = [base64.b64decode(payload) for payload in bridge.twilio.sent("media")]
    assert {len(frame) for frame in frames} == {160}
    assert bridge.call.frames_dropped == 0
    heard = g711.decode_samples(b"".join(frames))
    assert len(heard) >= len(clip)  # all of it, the resampler's tail flushed at the turn's end
    assert similarity(heard.astype(np.int16), g711.decode_samples(clip)) >= 0.9


def pcm16k_of(ulaw: bytes) -> np.ndarray:
    return soxr.resample(g711.decode_samples(ulaw), 8000, 16000).astype(np.int16)


async def test_without_turn_events_audio_after_a_clear_is_the_new_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A Line agent announces no turns: after its clear, its next audio plays at once."""
    bridge = Bridge()
    bridge.agent.reports_turns = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        bridge.agent.say(audio(1))
        await trio.testing.wait_all_tasks_blocked()
        bridge.agent.clear()
        bridge.agent.say(audio(2))  # the answer to the interruption
        await trio.testing.wait_all_tasks_blocked()
        bridge.twilio.stop()
        await bridge.wait_done()
    assert bridge.twilio.sent("media") == [audio(1), audio(2)]
    assert bridge.twilio.outbound.index(("clear", "")) == 1
