"""The hold tone a caller hears while Archer replaces a failed agent session (issue 16).

Layer: pure audio (numpy only). The tone is made here, in code, rather than shipped as a
recording: it is a soft two-note chime (E5 then C5, each faded in and out so it never clicks)
followed by quiet comfort noise, so the line never sounds dead, two seconds in all, looped. It
is computed once per process (a few milliseconds) and cached; the noise has a fixed seed, so
every process plays the same bytes.

Rules: 8 kHz μ-law, as Twilio carries it, cut into 20 ms frames, so the frames go on the wire
without resampling or a transcoder (whatever format the agent speaks).
"""

from __future__ import annotations

import base64
import functools
from typing import Final

import numpy as np

from archer.audio.g711 import encode_samples

SAMPLE_RATE: Final = 8000
#: One Twilio media frame: 20 ms of 8 kHz μ-law.
FRAME_BYTES: Final = 160
#: Each note of the chime, and the notes themselves (E5, C5: a falling major third).
NOTE_SECONDS: Final = 0.28
NOTES_HZ: Final = (659.25, 523.25)
#: Peak of the chime: about -18 dBFS, soft beside speech.
CHIME_PEAK: Final = 4000
#: The comfort noise after the chime, about -60 dBFS: the line sounds alive, not busy.
NOISE_RMS: Final = 30
#: The whole clip (chime, then noise): it loops while the reconnect lasts.
CLIP_SECONDS: Final = 2.0


@functools.cache
def hold_frames() -> tuple[str, ...]:
    """The hold clip as base64 μ-law 20 ms frames, ready for Twilio's ``media`` messages."""
    total = int(CLIP_SECONDS * SAMPLE_RATE)
    rng = np.random.default_rng(16)
    signal = rng.normal(0.0, NOISE_RMS, total)
    note_len = int(NOTE_SECONDS * SAMPLE_RATE)
    t = np.arange(note_len) / SAMPLE_RATE
    # A raised-cosine envelope: no click at either end of a note.
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(note_len) / (note_len - 1))
    for index, frequency in enumerate(NOTES_HZ):
        start = index * note_len
        signal[start : start + note_len] += (
            CHIME_PEAK * envelope * np.sin(2 * np.pi * frequency * t)
        )
    samples = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    ulaw = encode_samples(samples)
    return tuple(
        base64.b64encode(ulaw[offset : offset + FRAME_BYTES]).decode("ascii")
        for offset in range(0, len(ulaw), FRAME_BYTES)
    )
