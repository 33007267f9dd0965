"""Twilio's webhook form fields and stream ``start`` values, checked before anything is stored.

Layer: pure protocol (the standard library and ``attrs`` only; no I/O, nothing logged).

Rules (issue 19): every value Archer stores or echoes from Twilio is checked here first, so a
signed but hostile request (a CallSid of 500 characters, a NUL, a 20-digit duration, digits
that are not ASCII) is a ``TwilioFormError`` (the routes answer 400, the stream is refused)
and never a 500 or a half-written row. The shapes are Twilio's: SIDs are two letters and 32
hex digits; a call's ``From``/``To`` is an E.164 number, a ``client:`` or ``sip:`` address, or
a word such as ``anonymous``; statuses are Twilio's call statuses; durations are whole seconds.

Reference: ../shared/reference/twilio-media-streams.md; Twilio's voice webhook and status
callback parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import attrs

from archer.errors import TwilioProtocolError

__all__ = [
    "CALL_STATUSES",
    "StatusForm",
    "TwilioFormError",
    "VoiceForm",
    "check_stream_start",
    "status_form",
    "voice_form",
]

_CALL_SID: Final = re.compile(r"CA[0-9a-fA-F]{32}")
_STREAM_SID: Final = re.compile(r"MZ[0-9a-fA-F]{32}")
_DURATION: Final = re.compile(r"[0-9]{1,9}")
#: Longest ``From``/``To`` kept (SIP addresses are the long ones); E.164 is at most 16.
MAX_ADDRESS_CHARS: Final = 256
#: The longest call Twilio places is 24 hours; a duration past it is not Twilio's.
MAX_CALL_DURATION_S: Final = 24 * 3600
#: Archer's stream tokens are 43 characters; anything much longer is not one of them.
MAX_TOKEN_CHARS: Final = 128
#: Twilio's call statuses (``CallStatus``), as its status callbacks send them.
CALL_STATUSES: Final = frozenset(
    {
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "no-answer",
        "canceled",
        "failed",
    }
)


class TwilioFormError(TwilioProtocolError):
    """A Twilio field is missing or not what Twilio sends; the message names the field."""


@attrs.frozen(slots=True)
class VoiceForm:
    """What ``POST /twilio/voice`` stores, checked."""

    call_sid: str
    from_number: str
    to_number: str


@attrs.frozen(slots=True)
class StatusForm:
    """What ``POST /twilio/status`` stores, checked."""

    call_sid: str
    call_status: str
    #: None when Twilio sent no duration (a status before the call was answered).
    duration_s: int | None


def voice_form(fields: Mapping[str, str]) -> VoiceForm:
    """The voice webhook's fields, checked.

    Raises:
        TwilioFormError: ``CallSid`` is missing or malformed, or ``From``/``To`` is not an
            address Twilio sends.
    """
    return VoiceForm(
        call_sid=_call_sid(fields),
        from_number=_address(fields, "From"),
        to_number=_address(fields, "To"),
    )


def status_form(fields: Mapping[str, str]) -> StatusForm:
    """The status callback's fields, checked.

    Raises:
        TwilioFormError: ``CallSid`` or ``CallStatus`` is missing or malformed, or
            ``CallDuration`` is not a whole number of seconds within a day.
    """
    status = fields.get("CallStatus", "")
    if not status:
        raise TwilioFormError("CallStatus is required")
    if status not in CALL_STATUSES:
        raise TwilioFormError("CallStatus is not one of Twilio's call statuses")
    duration = fields.get("CallDuration", "")
    return StatusForm(
        call_sid=_call_sid(fields),
        call_status=status,
        duration_s=_duration(duration) if duration != "" else None,
    )


def check_stream_start(call_sid: str, stream_sid: str, token: str) -> None:
    """Check a media stream's ``start`` values before the call is looked up.

    Raises:
        TwilioFormError: a SID is malformed, or the token is empty, too long or not printable
            ASCII.
    """
    if not _CALL_SID.fullmatch(call_sid):
        raise TwilioFormError("start.callSid is not a CallSid (CA and 32 hex digits)")
    if not _STREAM_SID.fullmatch(stream_sid):
        raise TwilioFormError("start.streamSid is not a StreamSid (MZ and 32 hex digits)")
    if not token:
        raise TwilioFormError("start has no stream token")
    if len(token) > MAX_TOKEN_CHARS or not (token.isascii() and token.isprintable()):
        raise TwilioFormError("the stream token is not one Archer issued")


def _call_sid(fields: Mapping[str, str]) -> str:
    call_sid = fields.get("CallSid", "")
    if not call_sid:
        raise TwilioFormError("CallSid is required")
    if not _CALL_SID.fullmatch(call_sid):
        raise TwilioFormError("CallSid is not a CallSid (CA and 32 hex digits)")
    return call_sid


def _address(fields: Mapping[str, str], name: str) -> str:
    """``From`` or ``To``: empty if absent; printable text of a bounded length otherwise.

    Not only E.164: a withheld or odd caller ID (``anonymous``, ``+``, ``client:alice``) still
    gets a call, without a customer.
    """
    value = fields.get(name, "")
    if len(value) > MAX_ADDRESS_CHARS:
        raise TwilioFormError(f"{name} is longer than {MAX_ADDRESS_CHARS} characters")
    if not value.isprintable():
        raise TwilioFormError(f"{name} holds control characters")
    return value


def _duration(value: str) -> int:
    # ASCII digits only: str.isdigit() would pass "²", which int() then refuses.
    if not _DURATION.fullmatch(value):
        raise TwilioFormError("CallDuration is not a whole number of seconds")
    seconds = int(value)
    if seconds > MAX_CALL_DURATION_S:
        raise TwilioFormError(f"CallDuration is over {MAX_CALL_DURATION_S} seconds")
    return seconds
