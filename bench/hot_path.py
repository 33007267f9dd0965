"""What does one frame cost on Archer's hot path, part by part, and what would orjson save?

Run: /work/venv/bin/python bench/hot_path.py  (a few seconds; prints a table)

One process, same inputs, same machine state for every row; each figure is the best of 5 runs
of a loop long enough to take at least 20 ms (timeit's method). It prices the parts of a 20 ms
frame's trip that are Archer's own, next to a trio memory-channel hop (what a task boundary
costs), so the choice of JSON library and of the number of hops can be made from numbers:

- parsing a Twilio ``media`` frame (``archer.twilio.frames.parse_frame``, stdlib ``json``),
  and the same JSON with ``orjson`` if it is installed (it is not an Archer dependency);
- building the agent's ``audio_input`` and Twilio's outbound ``media`` (string concatenation,
  no encoder) against ``json.dumps``/``orjson.dumps`` of the same object;
- parsing an agent ``audio_output`` (``archer.cartesia.managed.parse_server_event``);
- one ``send_nowait`` + ``receive`` on a trio memory channel, between two tasks;
- not Archer's own, for scale: the bench's callers building each inbound ``media`` frame
  (``archer.emulators.twilio.frames.CallerFrames``, 50 a second per call);
- the keypad tone check (``archer.audio.tone_gate.ToneGate.blocks``, issue 21) that runs on
  every caller frame while keys are withheld from the agent (``DTMF_TO_AGENT=false``), on a
  frame of speech, of silence and of a tone, next to the per-frame transcode to the agent in
  the same run (``to_agent`` of a ``pcm_16000`` transcoder, and of μ-law passthrough), and the
  speech frame's check as a ratio to that transcode.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import time

import numpy as np
import trio

from archer.audio import g711
from archer.audio.clips import speech_clip
from archer.audio.dtmf import dtmf_tone
from archer.audio.tone_gate import ToneGate
from archer.audio.transcoder import transcoder_for
from archer.bench.timing import best_of_us, interpreter_build
from archer.cartesia import managed
from archer.emulators.twilio.frames import CallerFrames
from archer.twilio.frames import OutboundFrames, parse_frame

PAYLOAD = base64.b64encode(bytes(range(160))).decode()
MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "42",
        "media": {"track": "inbound", "chunk": "41", "timestamp": "820", "payload": PAYLOAD},
        "streamSid": "MZ" + "1" * 32,
    }
)
AUDIO_OUTPUT = managed.audio_output(PAYLOAD)
HOPS = 20_000


def channel_hop() -> float:
    """µs per item handed from one trio task to another over a memory channel (best of 3)."""

    async def main() -> float:
        send, receive = trio.open_memory_channel[str](10)
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for _ in receive:
                    pass

            nursery.start_soon(consume)
            started = time.perf_counter()
            for _ in range(HOPS):
                await send.send(PAYLOAD)
            elapsed = time.perf_counter() - started
            await send.aclose()
        return elapsed / HOPS

    return min(trio.run(main) for _ in range(3)) * 1e6


def main() -> None:
    frames = OutboundFrames("MZ" + "1" * 32)
    media_object = json.loads(MEDIA)
    rows: list[tuple[str, float]] = [
        (
            "Twilio media frame: parse_frame (stdlib json, checks)",
            best_of_us(lambda: parse_frame(MEDIA)),
        ),
        ("Twilio media frame: json.loads alone", best_of_us(lambda: json.loads(MEDIA))),
        (
            "agent audio_output: parse_server_event",
            best_of_us(lambda: managed.parse_server_event(AUDIO_OUTPUT)),
        ),
        ("audio_input: built by concatenation", best_of_us(lambda: managed.audio_input(PAYLOAD))),
        ("Twilio media out: built by concatenation", best_of_us(lambda: frames.media(PAYLOAD))),
        (
            "Twilio media out: json.dumps of the object",
            best_of_us(lambda: json.dumps(media_object)),
        ),
    ]
    if importlib.util.find_spec("orjson") is not None:
        import orjson

        rows += [
            ("Twilio media frame: orjson.loads", best_of_us(lambda: orjson.loads(MEDIA))),
            (
                "Twilio media out: orjson.dumps of the object",
                best_of_us(lambda: orjson.dumps(media_object)),
            ),
        ]
    else:
        rows.append(("orjson: not installed (pip install orjson to compare)", float("nan")))
    rows.append(("trio memory channel: one hop between tasks", channel_hop()))
    caller = CallerFrames("MZ" + "1" * 32, "AC" + "2" * 32, "CA" + "3" * 32)
    rows.append(
        ("bench caller's media in: CallerFrames.media", best_of_us(lambda: caller.media(PAYLOAD)))
    )
    rows += tone_check_rows()
    print(f"Python {sys.version.split()[0]} ({interpreter_build()})")
    width = max(len(name) for name, _ in rows)
    for name, microseconds in rows:
        print(f"{name:<{width}}  {microseconds:6.2f} µs  ({microseconds * 1000:7.0f} ns)")
    by_name = dict(rows)
    check = by_name[TONE_CHECK_SPEECH]
    transcode = by_name[TRANSCODE_PCM]
    print(
        f"keypad tone check (speech frame) / pcm_16000 transcode to the agent: "
        f"{check / transcode:.2f}"
    )


TONE_CHECK_SPEECH = "keypad tone check: speech frame (ToneGate.blocks)"
TRANSCODE_PCM = "transcode to agent: pcm_16000 (to_agent)"


def tone_check_rows() -> list[tuple[str, float]]:
    """The per-frame keypad tone check against the per-frame transcode (issue 21)."""
    clip = speech_clip("caller_balance")
    # The clip's loudest 20 ms, so the check runs to the end rather than stopping at the
    # energy test as it does for silence and quiet frames.
    frames = [clip[start : start + 160] for start in range(0, len(clip) - 159, 160)]
    loudest = max(frames, key=lambda frame: float(np.sum(g711.decode_samples(frame) ** 2.0)))
    speech = base64.b64encode(loudest).decode()
    silence = base64.b64encode(bytes([0xFF]) * 160).decode()
    tone = base64.b64encode(dtmf_tone("5")[:160]).decode()
    if ToneGate().blocks(speech) or not ToneGate().blocks(tone):
        raise AssertionError("the bench's speech frame must pass and its tone frame must not")
    pcm = transcoder_for("pcm_16000", quality="HQ")
    passthrough = transcoder_for("mulaw_8000", quality="HQ")
    # One gate per row, as a call keeps one: a tone frame is checked in full each time too (the
    # check runs before the hangover is looked at).
    speech_gate, silence_gate, tone_gate = ToneGate(), ToneGate(), ToneGate()
    return [
        (TONE_CHECK_SPEECH, best_of_us(lambda: speech_gate.blocks(speech))),
        ("keypad tone check: silent frame", best_of_us(lambda: silence_gate.blocks(silence))),
        ("keypad tone check: tone frame", best_of_us(lambda: tone_gate.blocks(tone))),
        (TRANSCODE_PCM, best_of_us(lambda: pcm.to_agent(speech))),
        (
            "transcode to agent: mulaw_8000 passthrough",
            best_of_us(lambda: passthrough.to_agent(speech)),
        ),
    ]


if __name__ == "__main__":
    main()
