"""``archer.twilio.form``: Twilio's fields checked before anything is stored (issue 19)."""

from __future__ import annotations

import pytest

from archer.twilio.form import (
    MAX_CALL_DURATION_S,
    StatusForm,
    TwilioFormError,
    VoiceForm,
    check_stream_start,
    status_form,
    voice_form,
)
from archer.twilio.signature import SignatureChecker

SID = "CA" + "0123456789abcdef" * 2
STREAM = "MZ" + "fedcba9876543210" * 2


def test_a_real_voice_webhook_passes() -> None:
    fields = {"CallSid": SID, "From": "+15555550101", "To": "+15555550000", "Extra": "x" * 9000}
    assert voice_form(fields) == VoiceForm(SID, "+15555550101", "+15555550000")
    assert voice_form({"CallSid": SID}) == VoiceForm(SID, "", "")


@pytest.mark.parametrize(
    ("duration", "expected"), [("", None), ("0", 0), ("95", 95), ("86400", 86400)]
)
def test_a_real_status_callback_passes(duration: str, expected: int | None) -> None:
    fields = {"CallSid": SID, "CallStatus": "completed", "CallDuration": duration}
    assert status_form(fields) == StatusForm(SID, "completed", expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "CallSid is required"),
        ({"CallSid": SID + "0"}, "not a CallSid"),
        ({"CallSid": SID[:-1] + "\x00"}, "not a CallSid"),
        ({"CallSid": "CA" + "٠" * 32}, "not a CallSid"),  # Arabic-Indic digits are not hex
        ({"CallSid": SID, "From": "x" * 257}, "From is longer"),
        ({"CallSid": SID, "To": "+1\x00"}, "To holds control characters"),
    ],
)
def test_hostile_voice_fields_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(TwilioFormError, match=message):
        voice_form(fields)


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("9" * 20, "not a whole number"),
        ("²", "not a whole number"),
        ("-1", "not a whole number"),
        (" 5", "not a whole number"),
        (str(MAX_CALL_DURATION_S + 1), "over"),
    ],
)
def test_hostile_durations_are_refused(duration: str, message: str) -> None:
    fields = {"CallSid": SID, "CallStatus": "completed", "CallDuration": duration}
    with pytest.raises(TwilioFormError, match=message):
        status_form(fields)


@pytest.mark.parametrize("status", ["", "COMPLETED", "completed\x00", "x" * 500])
def test_hostile_statuses_are_refused(status: str) -> None:
    with pytest.raises(TwilioFormError, match="CallStatus"):
        status_form({"CallSid": SID, "CallStatus": status})


@pytest.mark.parametrize(
    ("call_sid", "stream_sid", "token"),
    [
        (SID + "a", STREAM, "t" * 43),
        (SID, "MZ" + "1" * 31, "t" * 43),
        (SID, STREAM, ""),
        (SID, STREAM, "t" * 129),
        (SID, STREAM, "tok\x00en"),
        (SID, STREAM, "tökén"),
    ],
)
def test_hostile_start_values_are_refused(call_sid: str, stream_sid: str, token: str) -> None:
    with pytest.raises(TwilioFormError):
        check_stream_start(call_sid, stream_sid, token)
    check_stream_start(SID, STREAM, "t" * 43)  # while the real thing passes


def test_an_upgrade_signature_covers_the_query_string() -> None:
    """A signature of the bare URL does not pass with a query added, and one of the URL with
    its query passes, with or without the trailing slash Twilio may add."""
    checker = SignatureChecker("secret-token")
    bare = "wss://archer.example.com/ws/cartesia"
    signed_bare = checker.sign(bare, {})
    assert checker.valid_stream_upgrade(bare, signed_bare)
    assert not checker.valid_stream_upgrade(bare + "?x=1", signed_bare)
    assert checker.valid_stream_upgrade(bare + "?x=1", checker.sign(bare + "?x=1", {}))
    assert checker.valid_stream_upgrade(bare + "?x=1", checker.sign(bare + "/?x=1", {}))
