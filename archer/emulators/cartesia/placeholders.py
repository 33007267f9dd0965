"""``{name}`` placeholders in an agent script's strings: found when it loads, filled as it plays.

Layer: emulator, pure. ``archer.emulators.cartesia.script`` checks that every placeholder names
a variable (a session variable, or one an earlier step stores with ``into``);
``archer.emulators.cartesia.player`` fills them in from the session's variables.

Rules: ``{name}`` inside a string is replaced by the variable's text; braces around anything
else are literal text. A whole string ``{name:int}`` becomes the variable's value as an integer,
as a model passes an id it was given (left as written when the value is not a whole number, so
a bad script shows in the tool's answer rather than as a crash).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["INT_PLACEHOLDER", "PLACEHOLDER", "placeholders", "substitute"]

#: ``{name}`` inside a string.
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: A whole string ``{name:int}``: the variable's value as an integer.
INT_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):int\}")


def placeholders(value: object) -> set[str]:
    """The variable names of every placeholder in the strings inside ``value``."""
    if isinstance(value, str):
        whole = INT_PLACEHOLDER.fullmatch(value)
        return {whole[1]} if whole else set(PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(placeholders(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(placeholders(item) for item in value))
    return set()


def substitute(value: object, variables: Mapping[str, str]) -> object:
    """``value`` with every placeholder in its strings filled in from ``variables``."""
    if isinstance(value, str):
        whole = INT_PLACEHOLDER.fullmatch(value)
        if whole is not None:
            text = variables.get(whole[1], "")
            return int(text) if text.lstrip("-").isdigit() else value
        return PLACEHOLDER.sub(lambda match: variables.get(match[1], match[0]), value)
    if isinstance(value, Mapping):
        return {key: substitute(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, variables) for item in value]
    return value
