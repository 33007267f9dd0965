"""TwiML documents Archer answers Twilio with.

Layer: pure protocol. No trio, quart, sqlalchemy or structlog; nothing here logs.

Rules: every document is built with twilio's ``VoiceResponse``, never by string formatting, so
attribute values and text are always XML-escaped. Each function checks the limits Twilio
enforces only after the call has started (where a mistake is a failed call, not an exception)
and raises ``ValueError`` instead, naming the limit. Documents carry the XML declaration Twilio
itself emits, with nothing before it.

Reference: ../shared/reference/twilio-media-streams.md §1.3 and §2.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from twilio.twiml.voice_response import VoiceResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

#: A ``<Parameter>``'s name and value together must be shorter than this (Twilio's rule).
MAX_PARAMETER_CHARS: Final = 500
#: TwiML given inline to the REST API (``Twiml=``, as a transfer or an apology is) must be at
#: most this long, else error 32018.
MAX_INLINE_TWIML_CHARS: Final = 4000
#: A webhook's TwiML response must be at most 64 kB, else error 11750.
MAX_RESPONSE_BYTES: Final = 64 * 1024

_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
#: A SIP URI for ``<Dial><Sip>``: ``sip:``/``sips:``, no spaces or markup, at most 255 characters.
_SIP_URI: Final = re.compile(r"sips?:[^\s<>\"']{1,250}", re.IGNORECASE)


def connect_stream(
    *,
    stream_url: str,
    parameters: Mapping[str, str],
    recording_callback: str | None = None,
    notice: str = "",
) -> str:
    """Bridge the call to a bidirectional media stream at ``stream_url``.

    ``<Connect><Stream>`` blocks until Archer closes the socket; the ``<Hangup/>`` after it then
    ends the call instead of leaving the caller on a silent line. ``parameters`` reach Archer
    verbatim in the stream's ``start.customParameters``.

    ``recording_callback`` (``RECORDING=dual``): ``<Start><Recording channels="dual">`` first,
    its status callbacks to that URL; ``notice`` (``RECORDING_NOTICE``) is said before the stream.

    Raises:
        ValueError: ``stream_url`` is not an absolute ``wss://`` URL or carries a query string
            (Twilio drops it when dialing, so anything in it would be lost), a parameter has an
            empty name, or a parameter's name and value are 500 characters or more together.
    """
    parts = urlsplit(stream_url)
    if parts.scheme != "wss" or not parts.hostname:
        raise ValueError(f"stream URL {stream_url!r} is not an absolute wss:// URL")
    if "?" in stream_url or parts.fragment:
        raise ValueError(f"stream URL {stream_url!r} has a query or fragment; use parameters")
    response = VoiceResponse()
    if recording_callback is not None:
        # Issue 21: a dual-channel recording from the first moment (before the notice and the
        # stream), reported to ``recording_callback``; paused and resumed over REST.
        response.start().recording(
            channels="dual",
            track="both",
            recording_status_callback=recording_callback,
            recording_status_callback_method="POST",
            recording_status_callback_event="in-progress completed absent",
        )
    if notice:
        response.say(notice)
    stream = response.connect().stream(url=stream_url)
    for name, value in parameters.items():
        if not name:
            raise ValueError("stream parameter with an empty name")
        if len(name) + len(value) >= MAX_PARAMETER_CHARS:
            raise ValueError(
                f"stream parameter {name[:40]!r}: name and value together must be under "
                f"{MAX_PARAMETER_CHARS} characters"
            )
        stream.parameter(name=name, value=value)
    response.hangup()
    return _render(response, max_chars=None)


def apology(message: str) -> str:
    """Say ``message`` to the caller, then hang up (when the agent cannot take the call).

    Raises:
        ValueError: ``message`` is empty, or the document would not fit inline in a REST update.
    """
    if not message.strip():
        raise ValueError("apology message is empty")
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return _render(response, max_chars=MAX_INLINE_TWIML_CHARS)


def dial(target: str) -> str:
    """Transfer the call to ``target``, e.g. a human agent; sent inline over REST.

    ``target`` is an E.164 number (``<Dial>number</Dial>``) or a SIP URI
    (``<Dial><Sip>uri</Sip></Dial>``, for a contact centre reached over SIP).

    Raises:
        ValueError: ``target`` is neither an E.164 number such as ``+14155550100`` nor a
            ``sip:``/``sips:`` URI.
    """
    response = VoiceResponse()
    if _E164.fullmatch(target):
        response.dial(target)
    elif _SIP_URI.fullmatch(target):
        response.dial().sip(target)
    else:
        raise ValueError(f"{target[:40]!r} is neither an E.164 phone number nor a SIP URI")
    return _render(response, max_chars=MAX_INLINE_TWIML_CHARS)


def hang_up() -> str:
    """``<Hangup/>`` alone: the answer to a repeated voice webhook, which never gets a stream."""
    response = VoiceResponse()
    response.hangup()
    return _render(response, max_chars=None)


def empty() -> str:
    """An empty ``<Response/>``, for callbacks whose body Twilio ignores (status callbacks)."""
    return _render(VoiceResponse(), max_chars=None)


def _render(response: VoiceResponse, *, max_chars: int | None) -> str:
    xml = str(response.to_xml())
    if max_chars is not None and len(xml) > max_chars:
        raise ValueError(f"TwiML is {len(xml)} characters; inline TwiML allows {max_chars}")
    if len(xml.encode()) > MAX_RESPONSE_BYTES:
        raise ValueError(f"TwiML is over Twilio's {MAX_RESPONSE_BYTES} byte response limit")
    return xml
