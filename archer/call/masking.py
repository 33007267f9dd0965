"""Masking secrets: what a PIN the agent sent may look like, and cutting it out of any text.

Layer: call (pure functions, no I/O). ``archer.call.tools`` masks every argument, result and
error text with these before it is recorded, logged or spooled.

Rules: the value of a secret-named argument (``pin``) is masked whatever it holds, at any depth;
its text forms (as sent, stripped, as a number's text) are cut out of every other string of the
call, and a number equal to one of them is masked too. A secret made of digits is cut only where
it stands as a number of its own, so a PIN of 1234 does not mangle a balance of 123456.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

#: Argument names whose values are never stored or logged.
SECRET_ARGUMENT_NAMES: Final = frozenset(
    {"pin", "password", "passcode", "otp", "secret", "token", "account_number", "card_number"}
)
MASK: Final = "***"
#: Secret values shorter than this are not hunted for in other fields (a one-digit "PIN" would
#: mask every digit of a balance); the banking tools refuse PINs under four digits anyway.
MIN_SECRET_VALUE_CHARS: Final = 3


def collect_secrets(
    value: object, names: frozenset[str], into: set[str], *, under_secret: bool
) -> None:
    """Add the text forms of every value under a secret name (at any depth) to ``into``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            collect_secrets(
                item, names, into, under_secret=under_secret or str(key).lower() in names
            )
    elif isinstance(value, list | tuple):
        for item in value:
            collect_secrets(item, names, into, under_secret=under_secret)
    elif under_secret and value is not None and not isinstance(value, bool):
        into.update(secret_forms(value))


def secret_forms(value: object) -> set[str]:
    """The texts a secret ``value`` may show up as (``"1234"``, ``1234``, ``1234.0``, ...)."""
    if isinstance(value, float):
        forms = {repr(value), str(value), json.dumps(value)}
        if value.is_integer():
            forms.add(str(int(value)))
        return forms
    text = str(value)
    return {text, text.strip(), json.dumps(value, default=str).strip('"')}


def mask_value(value: object, names: frozenset[str], secrets: frozenset[str]) -> object:
    """``value`` with secret-named entries masked and ``secrets`` cut out of every text."""
    if isinstance(value, Mapping):
        return {
            key: MASK if str(key).lower() in names else mask_value(item, names, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_value(item, names, secrets) for item in value]
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MASK if secret_forms(value) & secrets else value
    return value


def scrub(text: str, secrets: frozenset[str]) -> str:
    """``text`` with every occurrence of each secret replaced by the mask (longest first).

    A secret made of digits is masked where it stands as a number of its own (not inside a
    longer run of digits), so a PIN of 1234 does not mangle a balance of 123456 in a result.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if not secret or secret not in text:
            continue
        if secret.isdigit():
            text = re.sub(rf"(?<![0-9]){re.escape(secret)}(?![0-9])", MASK, text)
        else:
            text = text.replace(secret, MASK)
    return text
