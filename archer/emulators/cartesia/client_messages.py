"""Reading what a client sends a Cartesia agent: one JSON object, typed fields, one error type.

Layer: emulator, pure (stdlib only, no I/O). The two readers of client messages,
``managed_messages`` (Managed Agents) and ``line_messages`` (Line / Calls API), share these
helpers and constants, so a message either protocol's server would refuse always raises
``ClientMessageError`` naming the field, never anything else (a ``KeyError`` or ``RecursionError``
escaping would crash the emulated agent instead of refusing the message as Cartesia does).

Rule: written from Cartesia's documents (../shared/reference/cartesia-agents.md §2, §3;
../shared/reference/cartesia-asyncapi/), never from Archer's own codecs, so a
test that drives an emulator with Archer's messages notices when the two disagree.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Final, NoReturn

__all__ = [
    "DTMF_DIGITS",
    "INPUT_FORMATS",
    "ClientMessageError",
    "base64_audio",
    "load_object",
    "object_field",
    "optional_text",
    "text",
]

#: The agent audio formats of both protocols (reference §3): μ-law 8 kHz or 16-bit PCM.
INPUT_FORMATS: Final = ("mulaw_8000", "pcm_16000", "pcm_24000", "pcm_44100")
#: The keys of a telephone keypad, the only DTMF digits either protocol carries.
DTMF_DIGITS: Final = frozenset("0123456789*#")


class ClientMessageError(ValueError):
    """A client message the real Cartesia server would refuse; the text says what is wrong.

    ``event`` is the client event the message named when it was one the protocol knows (however
    badly filled in), else ``None``: on Managed a known event with a bad field is refused with a
    non-fatal ``error``, anything else is fatal. ``code`` is the Managed ``error`` code Cartesia
    answers with (``invalid_event``, or ``invalid_dynamic_variables`` for bad variables).
    """

    def __init__(self, problem: str, *, event: str | None, code: str = "invalid_event") -> None:
        super().__init__(problem)
        self.event = event
        self.code = code


def _not_json(name: str) -> NoReturn:
    # json.loads takes NaN and Infinity by default; they are not JSON (RFC 8259).
    raise ValueError(f"{name} is not JSON")


def load_object(message: str | bytes | None) -> Mapping[str, object]:
    """One message as a JSON object (both protocols are JSON text frames only, reference §2).

    Raises:
        ClientMessageError: a binary frame, text that is not JSON, or JSON that is no object.
    """
    if not isinstance(message, str):
        raise ClientMessageError("binary frame: the agent protocols are JSON text", event=None)
    try:
        value = json.loads(message, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise ClientMessageError("message is not valid JSON", event=None) from None
    if not isinstance(value, dict):
        raise ClientMessageError("message is not a JSON object", event=None)
    return value


def text(parent: Mapping[str, object], key: str, where: str) -> str:
    """The string at ``key``.

    Raises:
        ClientMessageError: it is missing or not a string.
    """
    value = parent.get(key)
    if not isinstance(value, str):
        raise ClientMessageError(f"{where}.{key} is missing or not a string", event=_event(where))
    return value


def optional_text(parent: Mapping[str, object], key: str, where: str) -> str | None:
    """The string at ``key``, or ``None`` when it is absent (or JSON ``null``).

    Raises:
        ClientMessageError: it is present and not a string.
    """
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ClientMessageError(f"{where}.{key} is not a string", event=_event(where))


def object_field(
    parent: Mapping[str, object], key: str, where: str, *, required: bool = True
) -> dict[str, object]:
    """The object at ``key`` (an empty one when it is optional and absent).

    Raises:
        ClientMessageError: it is missing (when required) or not an object.
    """
    if key not in parent and not required:
        return {}
    value = parent.get(key)
    if not isinstance(value, dict):
        missing = "missing or " if required else ""
        raise ClientMessageError(f"{where}.{key} is {missing}not an object", event=_event(where))
    return value


def base64_audio(payload: str, where: str) -> bytes:
    """``payload`` decoded: padded base64, as both protocols carry audio (reference §2).

    Raises:
        ClientMessageError: it is not strict, padded base64.
    """
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise ClientMessageError(f"{where} is not base64", event=_event(where)) from None


def _event(where: str) -> str:
    # The event a field belongs to is the first part of its path ("dtmf_input.digit").
    return where.split(".", 1)[0]
