"""The one-time stream token: minted by ``POST /twilio/voice``, spent by the media stream.

Layer: web. Both routes import it from here, so neither route module imports the other.

Rules: the token travels only to Twilio (as a ``<Parameter>`` of the TwiML stream) and back; the
database keeps its SHA-256, so whoever reads the table cannot replay a stream.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

#: Bytes of randomness in a token (43 URL-safe characters).
STREAM_TOKEN_BYTES: Final = 32


def new_stream_token() -> str:
    """A fresh, unguessable token for one call's media stream."""
    return secrets.token_urlsafe(STREAM_TOKEN_BYTES)


def stream_token_hash(token: str) -> str:
    """How a stream token is stored: its SHA-256, so a database reader cannot replay it."""
    return hashlib.sha256(token.encode()).hexdigest()
