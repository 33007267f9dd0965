"""Reading Cartesia's JSON messages, for both protocols: one object, typed fields, one error type.

Layer: pure protocol (stdlib json only). ``archer.cartesia.managed`` and ``archer.cartesia.line``
parse with these, so a message that breaks either protocol always raises
``CartesiaProtocolError`` naming the field, and never anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NoReturn

from archer.errors import CartesiaProtocolError


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN/Infinity by default; they are not JSON, so no honest peer sends them.
    raise ValueError(f"{name} is not JSON")


def load_object(message: str | bytes | None) -> Mapping[str, object]:
    """One message as a JSON object."""
    if not isinstance(message, str):
        # The protocols are JSON text frames only; a binary frame means the peer is not speaking
        # them (and quart-trio-style stacks can hand an empty one over as None).
        raise CartesiaProtocolError("binary frame on an agent socket")
    try:
        event = json.loads(message, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise CartesiaProtocolError("message is not valid JSON") from None
    if not isinstance(event, dict):
        raise CartesiaProtocolError("message is not a JSON object")
    return event


def text(parent: Mapping[str, object], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise CartesiaProtocolError(f"{where}.{key} is missing or not a string")
    return value


def optional_text(parent: Mapping[str, object], key: str, where: str) -> str | None:
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    raise CartesiaProtocolError(f"{where}.{key} is not a string")


def object_field(parent: Mapping[str, object], key: str, where: str) -> dict[str, object]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise CartesiaProtocolError(f"{where}.{key} is missing or not an object")
    return value


def boolean(parent: Mapping[str, object], key: str, where: str) -> bool:
    value = parent.get(key)
    if not isinstance(value, bool):
        raise CartesiaProtocolError(f"{where}.{key} is missing or not a boolean")
    return value
