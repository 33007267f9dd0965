"""PIN hashing: the stored format, verification, and refusal of malformed hashes."""

from __future__ import annotations

import hashlib

import pytest

from archer.bank.pins import hash_pin, verify_pin

FAST = 1_000  # iterations: the format and the maths are the same, the tests are quicker


def test_hash_pin_has_the_documented_format() -> None:
    """A hash is pbkdf2_sha256$<iterations>$<salt hex>$<PBKDF2-HMAC-SHA256 hex>."""
    salt = bytes(range(16))

    stored = hash_pin("1234", iterations=FAST, salt=salt)

    expected = hashlib.pbkdf2_hmac("sha256", b"1234", salt, FAST).hex()
    assert stored == f"pbkdf2_sha256${FAST}${salt.hex()}${expected}"


def test_hash_pin_defaults_to_200k_iterations_and_a_fresh_salt() -> None:
    """Without arguments every hash uses 200,000 rounds and its own 16-byte salt."""
    first, second = hash_pin("1234"), hash_pin("1234")

    assert first != second
    scheme, rounds, salt_hex, digest_hex = first.split("$")
    assert (scheme, rounds) == ("pbkdf2_sha256", "200000")
    assert len(bytes.fromhex(salt_hex)) == 16
    assert len(bytes.fromhex(digest_hex)) == 32


def test_verify_pin_accepts_the_right_pin_only() -> None:
    """The PIN that was hashed verifies; any other PIN does not."""
    stored = hash_pin("2468", iterations=FAST)

    assert verify_pin("2468", stored) is True
    assert verify_pin("2469", stored) is False
    assert verify_pin("", stored) is False


def test_verify_pin_with_no_hash_is_false() -> None:
    """A customer without a PIN (created on first call) never verifies."""
    assert verify_pin("1234", None) is False


@pytest.mark.parametrize(
    "pin_hash",
    [
        "",
        "1234",
        "pbkdf2_sha256$1000$00ff",
        "pbkdf2_sha1$1000$00ff$" + "00" * 32,
        "pbkdf2_sha256$abc$00ff$" + "00" * 32,
        "pbkdf2_sha256$ 1000$00ff$" + "00" * 32,
        "pbkdf2_sha256$0$00ff$" + "00" * 32,
        "pbkdf2_sha256$99999999999$00ff$" + "00" * 32,
        "pbkdf2_sha256$1000$zz$" + "00" * 32,
        "pbkdf2_sha256$1000$$" + "00" * 32,
        "pbkdf2_sha256$1000$00ff$abc",
        "pbkdf2_sha256$1000$00ff$" + "00" * 16,
        "pbkdf2_sha256$1000$00ff$" + "00" * 32 + "$extra",
    ],
)
def test_verify_pin_refuses_malformed_hashes(pin_hash: str) -> None:
    """A malformed stored hash verifies nothing and raises nothing."""
    assert verify_pin("1234", pin_hash) is False


def test_verify_pin_survives_an_unencodable_pin() -> None:
    """A PIN string that is not valid Unicode text fails verification instead of raising."""
    assert verify_pin("\udcff", hash_pin("1234", iterations=FAST)) is False


@pytest.mark.parametrize(("iterations", "salt"), [(0, None), (-1, None), (FAST, b"")])
def test_hash_pin_refuses_nonsense_parameters(iterations: int, salt: bytes | None) -> None:
    """Zero rounds or an empty salt would make a hash worthless, so they are refused."""
    with pytest.raises(ValueError, match=r"iterations|salt"):
        hash_pin("1234", iterations=iterations, salt=salt)
