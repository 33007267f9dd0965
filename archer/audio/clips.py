"""Recorded speech for the demo and the emulators: one sentence per clip, 8 kHz μ-law.

Layer: pure audio. The clips are package data (``archer/data/speech/<name>.wav``), made once by
``scripts/make_speech_clips.sh`` with espeak-ng and sox and committed, so running Archer never
needs a speech synthesiser. The first ``speech_clip`` call for a name reads its file (a few
kilobytes) and the bytes are cached after that; call it before a call starts, or from a thread,
not on the trio thread mid-call.

Rules: the texts below are what the clips say, word for word, and the script speaks exactly these
strings (a test checks); change both together and rerun the script. Agent lines are a US female
voice, caller lines a British male voice, so the two sides are easy to tell apart by ear.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Final

from archer.audio.wav import WavError, read_wav

#: The sample rate of every clip: Twilio's, so a clip goes on the wire without resampling.
SAMPLE_RATE: Final = 8000

_TEXTS: Final[dict[str, str]] = {
    "agent_greeting": "Welcome to Archer Bank. How can I help you today?",
    "agent_pin_prompt": "Sure. For your security, please enter your PIN on your keypad.",
    "agent_balance": (
        "Thank you, you're verified. Your checking account ending in four eight two one has a"
        " balance of two thousand five hundred and forty three dollars and ten cents. Your"
        " savings account ending in seven three one zero holds twelve thousand eight hundred and"
        " fifty dollars. And your credit card ending in nine nine zero four has a balance owed of"
        " six hundred and forty two dollars and eighteen cents."
    ),
    "agent_freeze_confirm": "Of course. I'm freezing your card ending in two two zero seven now.",
    "agent_frozen": "Done. Your card is frozen. Is there anything else I can help you with?",
    "agent_goodbye": "Thank you for calling Archer Bank. Goodbye.",
    "agent_transfer": "I understand. Let me transfer you to a colleague who can help.",
    # Archer's own apologies when the agent is lost and no new session came (issue 16).
    "agent_lost_transfer": (
        "I'm sorry, I'm having technical trouble. Let me put you through to a colleague."
    ),
    "agent_lost_goodbye": (
        "I'm sorry, I'm having technical trouble. Please call us again in a few minutes. Goodbye."
    ),
    # The outbound fraud alert (issue 22): what the payment was is in the turn's text, from the
    # session's facts; the recorded audio speaks around it.
    "agent_fraud_greeting": (
        "Hello, this is Archer Bank calling about a recent payment on your card."
    ),
    "agent_fraud_pin_prompt": (
        "Before I tell you more, please enter your PIN on your keypad, then press hash."
    ),
    "agent_fraud_question": "Thank you, you're verified. Did you make this payment?",
    "agent_fraud_frozen": (
        "Thank you. I have frozen the card and recorded that you did not make this payment."
        " We will send you a new card. Goodbye."
    ),
    "caller_balance": "Hi, I'd like to check my balance, please.",
    "caller_freeze": (
        "Sorry to interrupt. I think I lost my card."
        " Can you freeze the one ending in two two zero seven?"
    ),
    "caller_thanks": "No, that's all. Thank you, bye.",
    "caller_human": "Actually, I'd like to speak to a person, please.",
    "caller_not_me": "No, that wasn't me.",
}

#: Every clip name ``speech_clip`` and ``clip_text`` accept.
CLIP_NAMES: Final = frozenset(_TEXTS)


def clip_text(name: str) -> str:
    """The sentence clip ``name`` says.

    Raises:
        KeyError: no clip has that name (the message lists the known ones).
    """
    _check_name(name)
    return _TEXTS[name]


@functools.cache
def speech_clip(name: str) -> bytes:
    """Clip ``name`` as 8 kHz μ-law bytes, without the WAV header.

    Raises:
        KeyError: no clip has that name (the message lists the known ones).
        WavError: the packaged file is not 8 kHz μ-law (the script was changed or bypassed).
    """
    _check_name(name)
    resource = importlib.resources.files("archer") / "data" / "speech" / f"{name}.wav"
    # as_file gives a real path even if the package is imported from a zip.
    with importlib.resources.as_file(resource) as path:
        audio = read_wav(path)
    if audio.encoding != "mulaw" or audio.sample_rate != SAMPLE_RATE:
        raise WavError(f"{path}: {audio.encoding} at {audio.sample_rate} Hz, not 8 kHz μ-law")
    return audio.data


def _check_name(name: str) -> None:
    # A bare KeyError('x') says nothing useful; name what would have worked.
    if name not in _TEXTS:
        raise KeyError(f"unknown speech clip {name!r}; known clips: {', '.join(sorted(_TEXTS))}")
