"""X-Twilio-Signature checks: Twilio's test vector, forgeries and the stream upgrade."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from archer.twilio.signature import SignatureChecker, shared_key_id, webhook_url

TOKEN = "12345"
DOC_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
DOC_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="
STREAM_URL = "wss://archer.example.com/ws/cartesia"


@pytest.fixture
def checker() -> SignatureChecker:
    return SignatureChecker(TOKEN)


def test_twilio_doc_vector_is_valid(checker: SignatureChecker) -> None:
    """The example from Twilio's security docs validates and signs to the documented value."""
    assert checker.valid_webhook(DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert checker.sign(DOC_URL, DOC_PARAMS) == DOC_SIGNATURE


def test_default_port_variant_is_accepted(checker: SignatureChecker) -> None:
    """The URL with Twilio's default :443 port validates against the same signature."""
    url = "https://example.com:443/myapp.php?foo=1&bar=2"
    assert checker.valid_webhook(url, DOC_PARAMS, DOC_SIGNATURE)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_is_invalid(checker: SignatureChecker, signature: str | None) -> None:
    """A request without a signature is rejected."""
    assert not checker.valid_webhook(DOC_URL, DOC_PARAMS, signature)
    assert not checker.valid_stream_upgrade(STREAM_URL, signature)


def test_forged_webhooks_are_rejected(checker: SignatureChecker) -> None:
    """A changed parameter, URL, token or signature fails validation."""
    tampered = {**DOC_PARAMS, "Digits": "9999"}
    assert not checker.valid_webhook(DOC_URL, tampered, DOC_SIGNATURE)
    assert not checker.valid_webhook(DOC_URL, {**DOC_PARAMS, "Extra": "1"}, DOC_SIGNATURE)
    assert not checker.valid_webhook("https://example.com/myapp.php", DOC_PARAMS, DOC_SIGNATURE)
    assert not checker.valid_webhook(DOC_URL, DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnV=")
    assert not SignatureChecker("54321").valid_webhook(DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_stream_upgrade_signed_over_wss_url_with_no_params(checker: SignatureChecker) -> None:
    """The upgrade signature covers the wss:// URL and no parameters."""
    signature = checker.sign(STREAM_URL, {})
    assert checker.valid_stream_upgrade(STREAM_URL, signature)
    https_signature = checker.sign(STREAM_URL.replace("wss://", "https://", 1), {})
    assert not checker.valid_stream_upgrade(STREAM_URL, https_signature)


def test_stream_upgrade_accepts_trailing_slash_variant(checker: SignatureChecker) -> None:
    """A signature over the URL with a trailing slash is accepted too (Twilio's §4.3 advice)."""
    signature = checker.sign(STREAM_URL + "/", {})
    assert checker.valid_stream_upgrade(STREAM_URL, signature)


def test_stream_upgrade_rejects_forgeries(checker: SignatureChecker) -> None:
    """A signature for another path or from another token does not open the stream."""
    assert not checker.valid_stream_upgrade(STREAM_URL, checker.sign(STREAM_URL + "x", {}))
    other = SignatureChecker("not-the-token").sign(STREAM_URL, {})
    assert not checker.valid_stream_upgrade(STREAM_URL, other)


def test_repr_hides_auth_token() -> None:
    """The auth token never appears in the checker's repr."""
    assert "s3cr3t-token" not in repr(SignatureChecker("s3cr3t-token"))


def test_webhook_url_joins_origin_and_path() -> None:
    """webhook_url is the configured origin followed by the path exactly as requested."""
    base = "https://archer.example.com"
    assert webhook_url(base, "/twilio/voice") == "https://archer.example.com/twilio/voice"
    assert webhook_url(base + "/", "/twilio/status?x=1&y=%20") == (
        "https://archer.example.com/twilio/status?x=1&y=%20"
    )


@pytest.mark.parametrize(
    "base",
    [
        "archer.example.com",
        "ftp://archer.example.com",
        "https://archer.example.com/prefix",
        "https://archer.example.com?x=1",
        "https://archer.example.com#frag",
    ],
)
def test_webhook_url_rejects_non_origin_base(base: str) -> None:
    """webhook_url refuses a base URL that is not a bare http(s) origin."""
    with pytest.raises(ValueError, match="base URL"):
        webhook_url(base, "/twilio/voice")


def test_webhook_url_rejects_relative_path() -> None:
    """webhook_url refuses a path that does not start with a slash."""
    with pytest.raises(ValueError, match="start with"):
        webhook_url("https://archer.example.com", "twilio/voice")


def test_webhook_url_round_trips_through_signature(checker: SignatureChecker) -> None:
    """A webhook signed over the built URL validates when rebuilt from the same config."""
    url = webhook_url("https://archer.example.com", "/twilio/voice")
    params = {"CallSid": "CA1", "From": "+15551230000"}
    assert checker.valid_webhook(url, params, checker.sign(url, params))


# --- SharedKey signatures (HMAC-SHA256, the key named in a header) --------------------------

SHARED = {"webhooks_sharedkey_a": "secret-a", "webhooks_sharedkey_b": "secret-b"}


def _shared_signature(secret: str, url: str, params: dict[str, str]) -> str:
    # The library's own signing, as Twilio computes it.
    return str(RequestValidator(secret).compute_signature(url, params, "HMAC_SHA256"))


@pytest.mark.parametrize("key_id", sorted(SHARED))
def test_either_shared_key_of_a_rotation_verifies(key_id: str) -> None:
    checker = SignatureChecker(TOKEN, SHARED)
    header = f"key={key_id},algorithm=HMAC_SHA256"
    signature = _shared_signature(SHARED[key_id], DOC_URL, DOC_PARAMS)
    assert checker.valid_webhook(DOC_URL, DOC_PARAMS, signature, header)
    upgrade = _shared_signature(SHARED[key_id], STREAM_URL, {})
    assert checker.valid_stream_upgrade(STREAM_URL, upgrade, header)


@pytest.mark.parametrize(
    "header",
    [
        "key=webhooks_sharedkey_c,algorithm=HMAC_SHA256",  # a key Archer does not know
        "algorithm=HMAC_SHA256",  # no key named
        "key=webhooks_sharedkey_a,algorithm=HMAC_MD5",  # an algorithm nobody supports
        "key=webhooks_sharedkey_b,algorithm=HMAC_SHA256",  # signed with the other key's secret
    ],
)
def test_a_shared_key_signature_is_checked_only_by_the_key_it_names(header: str) -> None:
    signature = _shared_signature(SHARED["webhooks_sharedkey_a"], DOC_URL, DOC_PARAMS)
    assert not SignatureChecker(TOKEN, SHARED).valid_webhook(DOC_URL, DOC_PARAMS, signature, header)


def test_the_settings_header_never_falls_back_to_the_auth_token() -> None:
    """A forger cannot pick the auth token's check by naming a key: the header decides."""
    checker = SignatureChecker(TOKEN, SHARED)
    header = "key=webhooks_sharedkey_a,algorithm=HMAC_SHA256"
    assert not checker.valid_webhook(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, header)
    assert checker.valid_webhook(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, None)


def test_shared_key_ids_and_secrets_stay_out_of_the_repr() -> None:
    assert "secret-a" not in repr(SignatureChecker(TOKEN, SHARED))


@pytest.mark.parametrize(
    ("header", "key_id"),
    [
        ("key=k1,algorithm=HMAC_SHA256", "k1"),
        (" algorithm=HMAC_SHA256 , key = k2 ", "k2"),
        ("", ""),
    ],
)
def test_the_key_id_is_read_from_the_settings_header(header: str, key_id: str) -> None:
    assert shared_key_id(header) == key_id
