"""Customer PIN hashing.

Layer: pure (hashlib, hmac and secrets only; no I/O, no trio, no logging).

Rules: a PIN is never stored or logged, only ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>``
(the format of ``customers.pin_hash``). ``verify_pin`` compares in constant time and answers
False, never raises, for a missing or malformed hash: a corrupt row must not crash a call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["DEFAULT_ITERATIONS", "hash_pin", "verify_pin"]

SCHEME: Final = "pbkdf2_sha256"
#: OWASP's 2023 floor for PBKDF2-HMAC-SHA256 is 600k; a 4-digit PIN is guessable offline at any
#: cost, so the count only has to make online checks cheap to run and bulk guessing tedious.
DEFAULT_ITERATIONS: Final = 200_000
SALT_BYTES: Final = 16
# A stored hash naming more rounds than this is corrupt or hostile: refuse it rather than spend
# seconds of CPU on the call's behalf.
_MAX_ITERATIONS: Final = 10_000_000


def hash_pin(pin: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` for ``pin`` (a fresh salt by default).

    Raises:
        ValueError: ``iterations`` is not positive or ``salt`` is empty.
    """
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 1 and {_MAX_ITERATIONS}, not {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if not salt:
        raise ValueError("salt must not be empty")
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, pin_hash: str | None) -> bool:
    """Whether ``pin`` matches ``pin_hash``; False when the hash is None or malformed."""
    if pin_hash is None:
        return False
    parts = pin_hash.split("$")
    if len(parts) != 4:
        return False
    scheme, rounds, salt_hex, digest_hex = parts
    # int() would also accept " 12", "+12" and "1_2"; only plain ASCII digits are well formed.
    if scheme != SCHEME or not (rounds.isascii() and rounds.isdigit()):
        return False
    iterations = int(rounds)
    if not 1 <= iterations <= _MAX_ITERATIONS:
        return False
    try:
        salt = bytes.fromhex(salt_hex)
        expected = bytes.fromhex(digest_hex)
        secret = pin.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    if not salt or len(expected) != hashlib.sha256().digest_size:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    return hmac.compare_digest(actual, expected)
