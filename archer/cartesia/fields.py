"""Reading Cartesia's JSON messages, for both protocols: one object, typed fields, one error type.

Layer: pure protocol (stdlib json only). ``archer.cartesia.managed`` and ``archer.cartesia.line``
parse with these, so a message that breaks either protocol always raises
``CartesiaProtocolError`` naming the field, and never anything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import NoReturn, TypeVar

from archer.errors import CartesiaProtocolError

_T = TypeVar("_T")


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


# --- Fields Archer only records or logs --------------------------------------------------------
#
# Strict parsing of a field Archer never acts on turns a small protocol drift into a dropped
# call. These readers return ``None`` for a missing or mistyped value and, when it was present
# but mistyped, append its path to ``ignored`` so the adapter can log it (once per call).


def lenient_text(
    parent: Mapping[str, object], key: str, where: str, ignored: list[str] | None
) -> str | None:
    return _lenient(parent, key, where, ignored, str)


def lenient_number(
    parent: Mapping[str, object], key: str, where: str, ignored: list[str] | None
) -> float | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            pass
        else:
            if math.isfinite(number):  # 1e400 is valid JSON and reads as infinity
                return number
    _note(ignored, where, key)
    return None


def lenient_boolean(
    parent: Mapping[str, object], key: str, where: str, ignored: list[str] | None
) -> bool | None:
    return _lenient(parent, key, where, ignored, bool)


def lenient_object(
    parent: Mapping[str, object], key: str, where: str, ignored: list[str] | None
) -> Mapping[str, object]:
    """The object at ``key``, or an empty one when it is missing or not an object."""
    value = parent.get(key)
    if isinstance(value, dict):
        return value
    if value is not None:
        _note(ignored, where, key)
    return {}


def note_unknown_keys(
    event: Mapping[str, object], known: frozenset[str], where: str, ignored: list[str] | None
) -> None:
    """Append ``where.key`` to ``ignored`` for every key of ``event`` outside ``known``."""
    if ignored is not None and not known.issuperset(event):
        ignored.extend(f"{where}.{key}"[:80] for key in event if key not in known)


def _lenient(
    parent: Mapping[str, object], key: str, where: str, ignored: list[str] | None, kind: type[_T]
) -> _T | None:
    value = parent.get(key)
    if value is None or isinstance(value, kind):
        return value
    _note(ignored, where, key)
    return None


def _note(ignored: list[str] | None, where: str, key: str) -> None:
    if ignored is not None:
        ignored.append(f"{where}.{key}")
