"""Phone numbers as Twilio sends them. Pure."""

from __future__ import annotations

import re
from typing import Final

_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")


def e164_or_none(number: str) -> str | None:
    """``number`` if it is a dialable E.164 number, else None (withheld, ``client:``, SIP…)."""
    candidate = number.strip()
    return candidate if _E164.fullmatch(candidate) else None
