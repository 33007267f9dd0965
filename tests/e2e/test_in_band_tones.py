"""Issue 21: keys the caller's phone sends in band do not reach the agent as sound either.

Real hypercorn, real websockets over loopback, a real database. The caller is the Twilio
emulator (``EmulatedCaller(in_band_tones=True)``): each key is a ``dtmf`` message *and* its
tone in the caller's ``media`` (ITU-T Q.23, written in the emulator, starting mid-frame). It
speaks, keys digits outside any keypad capture, and speaks again. Every byte of audio the agent
received is searched for keypad tones with ``archer.audio.dtmf.detect_digits``.
"""

from __future__ import annotations

import base64
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from archer.audio.clips import speech_clip
from archer.audio.dtmf import detect_digits
from archer.cartesia import managed
from archer.db.store import StoredCall
from archer.emulators.twilio.caller import EmulatedCaller
from archer.emulators.twilio.script import CallerScript, HangUp, Pause, Press, Say
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.test_call import AUTH_TOKEN, PUBLIC_BASE_URL, System, running_system
from tests.helpers import live_archer_tasks

ACCOUNT_SID = "AC" + "e2e2" * 8
KEYS = "4821#"
#: One second of real speech each side of the keys.
CLIPS = {
    "before": speech_clip("caller_balance")[4000:12000],
    "after": speech_clip("caller_thanks")[4000:12000],
}
SCRIPT = CallerScript(
    (Pause(0.2), Say("before"), Press(KEYS, gap_ms=200), Pause(0.3), Say("after"), HangUp())
)


async def _listen(peer: AgentPeer) -> None:
    await peer.accept_session()


def _frames(audio: bytes) -> list[str]:
    return [base64.b64encode(audio[i : i + 160]).decode() for i in range(0, len(audio), 160)]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def _keyed_call(
    database_url: str, *, dtmf_to_agent: bool
) -> tuple[AgentPeer, str, str, StoredCall]:
    """Place the call; the agent's peer, the caller's keys as sent, ``/metrics`` after, and
    the stored record."""
    async with running_system(
        database_url, _listen, tools=None, dtmf_to_agent=dtmf_to_agent
    ) as system:
        caller = EmulatedCaller(
            archer_url=system.caller.archer_url,
            public_base_url=PUBLIC_BASE_URL,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            script=SCRIPT,
            clips=CLIPS.__getitem__,
            in_band_tones=True,
        )
        with trio.fail_after(STEP_TIMEOUT):
            outcome = await caller.run()
        stored = await _wait_for_record(system, caller.call_sid)
        metrics = await trio.to_thread.run_sync(_get, caller.archer_url + "/metrics")
        peer = await system.peer()
    assert (outcome.ended_by, outcome.steps_done) == ("caller", len(SCRIPT.steps))
    assert stored.record.status == "completed"
    return peer, outcome.dtmf_sent, metrics, stored


async def _wait_for_record(system: System, call_sid: str) -> StoredCall:
    with trio.fail_after(STEP_TIMEOUT):
        while True:
            stored = await system.store.load_call(call_sid)
            if stored is not None and stored.record.end_reason and not live_archer_tasks():
                return stored
            await trio.sleep(0.05)


def _silenced_for_tones(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if (
                sample.name == "archer_caller_frames_silenced_total"
                and sample.labels.get("reason") == "keypad_tone"
            ):
                return sample.value
    raise AssertionError("archer_caller_frames_silenced_total{reason=keypad_tone} is missing")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_withheld_keys_keyed_in_band_reach_the_agent_neither_as_digits_nor_as_tones(
    database_url: str,
) -> None:
    """``DTMF_TO_AGENT=false`` (the default), no capture: no ``dtmf_input``, no tone in the
    agent's audio, and the caller's speech on both sides of the keys arrives unchanged."""
    peer, keyed, metrics, stored = await _keyed_call(database_url, dtmf_to_agent=False)
    assert keyed == KEYS
    assert peer.of(managed.DtmfInput) == []
    inputs = [event.audio for event in peer.of(managed.AudioInput)]
    heard = b"".join(base64.b64decode(payload) for payload in inputs)
    assert detect_digits(heard) == ""
    assert set(heard) - {0xFF, 0x7F}  # not all silence: the caller was heard
    for clip in CLIPS.values():
        speech = _frames(clip)
        first = next(i for i, frame in enumerate(speech) if set(base64.b64decode(frame)) != {0xFF})
        at = inputs.index(speech[first])
        assert inputs[at : at + len(speech) - first] == speech[first:]  # every frame, in order
    # Five keys of 100 ms, each spanning six frames; the hangover adds up to two.
    assert 5 * len(KEYS) <= _silenced_for_tones(metrics) <= 8 * len(KEYS)
    # The record counts the same frames, and the keys dropped.
    assert stored.record.frames_silenced_for_tones == _silenced_for_tones(metrics)
    assert stored.record.dtmf_dropped == len(KEYS)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_with_dtmf_to_agent_the_keys_and_their_tones_pass(database_url: str) -> None:
    """``DTMF_TO_AGENT=true``: the agent is given the keys, so their tones are not removed."""
    peer, keyed, metrics, stored = await _keyed_call(database_url, dtmf_to_agent=True)
    assert [event.digit for event in peer.of(managed.DtmfInput)] == list(keyed)
    heard = b"".join(base64.b64decode(event.audio) for event in peer.of(managed.AudioInput))
    assert detect_digits(heard) == KEYS
    assert _silenced_for_tones(metrics) == 0
    assert (stored.record.frames_silenced_for_tones, stored.record.dtmf_dropped) == (0, 0)
