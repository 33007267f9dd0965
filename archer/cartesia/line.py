"""Cartesia Line / Calls API WebSocket wire format (``/agents/stream/{agent_id}``), both roles.

Layer: pure protocol (sans-I/O). No trio, quart, sqlalchemy or structlog; nothing here logs.

Rules: the client role (Archer) builds ``start``/``media_input``/``dtmf``/``custom`` text and
turns each server message into one frozen event with ``parse_server_event``. Every message is
keyed by ``event``; the only exception is the generic Cartesia error object, keyed by ``type``.
Unknown server fields are ignored, ``stream_id`` is optional on every server event, and an
unknown event comes back as ``Unknown`` (returned, not raised) because Cartesia adds events
without notice. Fields Archer acts on are strict: a known event with one missing or mistyped
raises ``CartesiaProtocolError`` naming the field. Fields it only logs (an error's text, the
ack's config) are lenient: a mistyped one reads as absent and its path is appended to the
parser's ``ignored`` list. A transfer whose target is unusable still parses (``target=None``),
because a caller who asked for a person must not be hung up on. The server role (our Cartesia
emulator and test servers) parses client messages strictly with ``parse_client_event`` and
builds server messages. Builders raise ``ValueError`` for local misuse; parsers raise
``CartesiaProtocolError`` for a peer's bad input. Audio stays base64 text and is never decoded
on the client side.

Line has no client tool-call channel (reference §5.1), so Archer defines its own convention
over ``custom`` events: the agent sends ``{"archer_tool": name, "id": ..., "arguments": {...}}``
(``tool_call``/``tool_request``) and Archer answers ``{"archer_tool_result": id, "result": ...,
"is_error": ...}`` (``tool_result``/``tool_result_of``).

Builders other than the two audio hot paths escape non-ASCII text (``ensure_ascii``), so a lone
surrogate echoed from a peer can never make the WebSocket layer fail to encode a frame.

Reference: ../shared/reference/cartesia-agents.md §2.A, §4 and §5.1.

Size (over 400 lines, on purpose): one wire format, both roles of each message (builder and
parser) under one set of constants and field readers, as in ``archer.cartesia.managed``; the
sections below (events, the tool convention, client role, server role, helpers) are its rooms.
"""

from __future__ import annotations

import binascii
import json
import re
from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING, Final

import attrs

from archer.cartesia.fields import boolean as _boolean
from archer.cartesia.fields import lenient_object, lenient_text
from archer.cartesia.fields import load_object as _load
from archer.cartesia.fields import object_field as _object
from archer.cartesia.fields import optional_text as _optional_text
from archer.cartesia.fields import text as _text
from archer.errors import CartesiaProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

INPUT_FORMATS: Final = ("mulaw_8000", "pcm_16000", "pcm_24000", "pcm_44100")
DTMF_DIGITS: Final = frozenset("0123456789*#")
#: Close reasons (code 1000) the server uses; the agent's may carry ``", reason: ..."`` after it.
CALL_ENDED_BY_AGENT: Final = "call ended by agent"
IDLE_TIMEOUT: Final = "connection idle timeout"
#: Keys of Archer's tool convention over ``custom`` metadata.
TOOL_REQUEST_KEY: Final = "archer_tool"
TOOL_RESULT_KEY: Final = "archer_tool_result"
MAX_TOOL_NAME_CHARS: Final = 64
#: A transfer target: an E.164 number, or a SIP URI (RFC 3261 ``sip:``/``sips:``, no spaces or
#: markup, at most 255 characters as Twilio's ``<Sip>`` noun takes).
E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
SIP_URI: Final = re.compile(r"sips?:[^\s<>\"']{1,250}", re.IGNORECASE)
TRANSFER_DESTINATION_TYPES: Final = frozenset({"phone", "sip_uri"})
MAX_TOOL_CALL_ID_CHARS: Final = 256


# --------------------------------------------------------------------------------------------
# Server → client events (what Archer receives)
# --------------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Ack:
    """The server accepted ``start``; ``stream_id`` is ``""`` when the server left it out."""

    stream_id: str
    config: Mapping[str, object]


@attrs.frozen(slots=True)
class MediaOutput:
    """Agent speech: base64 audio in the ``start`` input format."""

    payload: str


@attrs.frozen(slots=True)
class Clear:
    """The caller barged in: drop every buffered agent frame (not the end of the call)."""


@attrs.frozen(slots=True)
class Dtmf:
    """A key press: the agent's (server → client) or the caller's (client → server)."""

    digit: str


@attrs.frozen(slots=True)
class Custom:
    """Free-form metadata between Archer and the agent code, in either direction."""

    metadata: Mapping[str, object]


@attrs.frozen(slots=True)
class TransferCall:
    """The agent asks Archer to transfer the call.

    ``target`` is an E.164 number or a ``sip:``/``sips:`` URI, whichever of the three shapes
    the agent used (``transfer.target_phone_number``, a flat ``target_phone_number``, or the Line
    SDK's ``transfer_destination: {type: phone | sip_uri, value}``). It is ``None`` when the target
    is missing or unusable, and ``problem`` says why: a caller who asked for a person is then
    transferred to the bank's own number, not hung up on.
    """

    target: str | None
    problem: str | None = None


@attrs.frozen(slots=True)
class Error:
    """The server reports a problem (the generic Cartesia error object); ``code`` may be ``""``."""

    message: str
    code: str


@attrs.frozen(slots=True)
class Unknown:
    """An event this module does not know; the client logs it once and ignores it."""

    event: str


ServerEvent = Ack | MediaOutput | Clear | Dtmf | Custom | TransferCall | Error | Unknown


# --------------------------------------------------------------------------------------------
# Client → server events (what an emulated agent receives)
# --------------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Start:
    """The client's first message: stream id, audio format, overrides and call metadata."""

    stream_id: str | None
    input_format: str
    voice_id: str | None
    introduction: str | None
    system_prompt: str | None
    metadata: Mapping[str, object]


@attrs.frozen(slots=True)
class MediaInput:
    """Caller audio: base64 (checked, not kept decoded) in the ``start`` input format."""

    stream_id: str | None
    payload: str


ClientEvent = Start | MediaInput | Dtmf | Custom


# --------------------------------------------------------------------------------------------
# Archer's tool convention over custom events
# --------------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ToolRequest:
    """The agent asks Archer to run tool ``name``; answer with ``tool_result``."""

    tool_call_id: str
    name: str
    arguments: Mapping[str, object]


def tool_request(metadata: Mapping[str, object]) -> ToolRequest | None:
    """The tool request carried by a ``custom`` event's metadata, or ``None`` if it is not one.

    Raises:
        CartesiaProtocolError: ``archer_tool`` is present but it, ``id`` or ``arguments`` is
            missing, mistyped, empty or too long.
    """
    if TOOL_REQUEST_KEY not in metadata:
        return None
    where = "custom.metadata"
    name = _bounded_text(metadata, TOOL_REQUEST_KEY, where, MAX_TOOL_NAME_CHARS)
    tool_call_id = _bounded_text(metadata, "id", where, MAX_TOOL_CALL_ID_CHARS)
    arguments = metadata.get("arguments", {})
    if not isinstance(arguments, dict):
        raise CartesiaProtocolError(f"{where}.arguments is not an object")
    return ToolRequest(tool_call_id=tool_call_id, name=name, arguments=arguments)


def tool_result_of(metadata: Mapping[str, object]) -> tuple[str, str, bool] | None:
    """``(tool_call_id, result, is_error)`` from a ``custom`` event, or ``None`` if not a result.

    Raises:
        CartesiaProtocolError: ``archer_tool_result`` is present but it, ``result`` or
            ``is_error`` is missing, mistyped, empty or too long.
    """
    if TOOL_RESULT_KEY not in metadata:
        return None
    where = "custom.metadata"
    tool_call_id = _bounded_text(metadata, TOOL_RESULT_KEY, where, MAX_TOOL_CALL_ID_CHARS)
    return tool_call_id, _text(metadata, "result", where), _boolean(metadata, "is_error", where)


# --------------------------------------------------------------------------------------------
# Client role: builders
# --------------------------------------------------------------------------------------------

_MEDIA_INPUT_PREFIX: Final = '{"event":"media_input","stream_id":'
_MEDIA_OUTPUT_PREFIX: Final = '{"event":"media_output","stream_id":'
_MEDIA_MIDDLE: Final = ',"media":{"payload":"'
_MEDIA_SUFFIX: Final = '"}}'


def start(
    *,
    input_format: str,
    metadata: Mapping[str, str],
    stream_id: str | None = None,
    voice_id: str | None = None,
    introduction: str | None = None,
    system_prompt: str | None = None,
) -> str:
    """The ``start`` message, which must be the first thing sent on the socket.

    ``agent`` is sent only when an override is given; ``metadata`` always (it may be empty).

    Raises:
        ValueError: an unknown format, an empty ``stream_id``, or a metadata key or value that is
            not a string.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format {input_format!r} is not one of {list(INPUT_FORMATS)}")
    if stream_id is not None and not stream_id:
        raise ValueError("stream_id is empty")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata entry {key!r} is not a string to a string")
    message: dict[str, object] = {"event": "start"}
    if stream_id is not None:
        message["stream_id"] = stream_id
    config: dict[str, object] = {"input_format": input_format}
    if voice_id is not None:
        config["voice_id"] = voice_id
    message["config"] = config
    agent: dict[str, object] = {}
    if introduction is not None:
        agent["introduction"] = introduction
    if system_prompt is not None:
        agent["system_prompt"] = system_prompt
    if agent:
        message["agent"] = agent
    message["metadata"] = dict(metadata)
    return _dumps(message)


def media_input(stream_id: str, payload: str) -> str:
    """A ``media_input`` message carrying base64 ``payload`` (hot path: no JSON encoder).

    Base64 text never needs JSON escaping; ``stream_id`` is quoted by the C string encoder.
    """
    return _MEDIA_INPUT_PREFIX + _quote(stream_id) + _MEDIA_MIDDLE + payload + _MEDIA_SUFFIX


def dtmf(stream_id: str, digit: str) -> str:
    """A ``dtmf`` message for one key (the same shape in both directions).

    Raises:
        ValueError: ``digit`` is not one of ``0``-``9``, ``*``, ``#``.
    """
    if digit not in DTMF_DIGITS:
        raise ValueError(f"{digit[:8]!r} is not a DTMF digit (0-9, *, #)")
    return '{"event":"dtmf","stream_id":' + _quote(stream_id) + ',"dtmf":"' + digit + '"}'


def custom(stream_id: str, metadata: Mapping[str, object]) -> str:
    """A ``custom`` message carrying ``metadata`` (the same shape in both directions).

    Raises:
        ValueError: ``metadata`` holds something JSON cannot carry (NaN, a set, a cycle...).
    """
    try:
        return _dumps({"event": "custom", "stream_id": stream_id, "metadata": dict(metadata)})
    except TypeError as exc:
        raise ValueError(f"custom metadata is not JSON: {exc}") from None


def tool_result(stream_id: str, tool_call_id: str, result: str, *, is_error: bool) -> str:
    """A ``custom`` message answering the tool request ``tool_call_id`` (Archer's convention).

    Raises:
        ValueError: ``tool_call_id`` is empty or over 256 characters.
    """
    _check_bounded(tool_call_id, "tool_call_id", MAX_TOOL_CALL_ID_CHARS)
    return custom(
        stream_id, {TOOL_RESULT_KEY: tool_call_id, "result": result, "is_error": is_error}
    )


# --------------------------------------------------------------------------------------------
# Client role: parsing what the server sends
# --------------------------------------------------------------------------------------------


def parse_server_event(
    message: str | bytes | None, ignored: list[str] | None = None
) -> ServerEvent:
    """Parse one message from the agent.

    Returns ``Unknown`` for an event this module does not know.

    Raises:
        CartesiaProtocolError: a binary frame, not JSON, not an object, no ``event`` (nor
            ``type``), or a required field missing or of the wrong type.
    """
    event = _load(message)
    kind = event.get("event")
    # media_output first: it is nearly every message the agent sends.
    if kind == "media_output":
        return MediaOutput(
            payload=_text(_object(event, "media", kind), "payload", "media_output.media")
        )
    if kind == "clear":
        return Clear()
    if kind == "ack":
        stream_id = _optional_text(event, "stream_id", kind)
        return Ack(stream_id=stream_id or "", config=lenient_object(event, "config", kind, ignored))
    if kind == "dtmf":
        return Dtmf(digit=_digit(event, kind))
    if kind == "custom":
        return Custom(metadata=_object(event, "metadata", kind))
    if kind == "transfer_call":
        return _transfer_call(event)
    if kind is None:
        kind = event.get("type")  # the generic Cartesia error object is keyed by "type"
    if kind == "error":
        return _error(event, ignored)
    if isinstance(kind, str):
        return Unknown(event=kind)
    raise CartesiaProtocolError("message has no event")


def _transfer_call(event: Mapping[str, object]) -> TransferCall:
    transfer = event.get("transfer")
    parent = transfer if isinstance(transfer, dict) else event
    destination = parent.get("transfer_destination", event.get("transfer_destination"))
    if destination is not None:
        if not isinstance(destination, dict):
            return TransferCall(None, "transfer_destination is not an object")
        kind, value = destination.get("type"), destination.get("value")
        if kind not in TRANSFER_DESTINATION_TYPES:
            return TransferCall(None, f"transfer_destination.type {str(kind)[:20]!r} is unknown")
        pattern = E164 if kind == "phone" else SIP_URI
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return TransferCall(None, f"transfer_destination.value is not a valid {kind}")
        return TransferCall(value)
    number = parent.get("target_phone_number")
    if number is None:
        return TransferCall(None, "transfer_call names no target")
    if not isinstance(number, str) or not E164.fullmatch(number):
        return TransferCall(None, "target_phone_number is not an E.164 number")
    return TransferCall(number)


def _error(event: Mapping[str, object], ignored: list[str] | None) -> Error:
    # Only logged and recorded, so nothing here may end the call: mistyped fields read as absent.
    message = lenient_text(event, "message", "error", ignored)
    if message is None:
        message = lenient_text(event, "title", "error", ignored)
    code = lenient_text(event, "error_code", "error", ignored)
    if code is None:
        status = event.get("status_code")
        if isinstance(status, str):
            code = status
        elif isinstance(status, int) and not isinstance(status, bool) and abs(status) < 10**9:
            code = str(status)
        elif status is not None and ignored is not None:
            ignored.append("error.status_code")
    return Error(message=message or "", code=code or "")


# --------------------------------------------------------------------------------------------
# Server role: parsing what the client sends (strictly)
# --------------------------------------------------------------------------------------------


def parse_client_event(message: str | bytes | None) -> ClientEvent:
    """Parse one client message strictly (for emulators).

    Raises:
        CartesiaProtocolError: a binary frame, not JSON, not an object, an unknown event, a
            required field missing or mistyped, an unknown input format, or a payload that is
            not base64.
    """
    event = _load(message)
    kind = event.get("event")
    if kind == "media_input":
        media = _object(event, "media", kind)
        payload = _text(media, "payload", "media_input.media")
        try:
            binascii.a2b_base64(payload, strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII character
            raise CartesiaProtocolError("media_input.media.payload is not base64") from None
        return MediaInput(stream_id=_optional_text(event, "stream_id", kind), payload=payload)
    if kind == "dtmf":
        _optional_text(event, "stream_id", kind)
        return Dtmf(digit=_digit(event, kind))
    if kind == "custom":
        _optional_text(event, "stream_id", kind)
        return Custom(metadata=_object(event, "metadata", kind))
    if kind == "start":
        return _parse_start(event)
    if isinstance(kind, str):
        raise CartesiaProtocolError(f"unknown client event {kind[:40]!r}")
    raise CartesiaProtocolError("message has no event")


def _parse_start(event: Mapping[str, object]) -> Start:
    stream_id = _optional_text(event, "stream_id", "start")
    if stream_id == "":
        raise CartesiaProtocolError("start.stream_id is empty")
    config = _object(event, "config", "start")
    input_format = _text(config, "input_format", "start.config")
    if input_format not in INPUT_FORMATS:
        raise CartesiaProtocolError(
            f"start.config.input_format {input_format[:40]!r} is not one of {list(INPUT_FORMATS)}"
        )
    agent = event.get("agent", {})
    if not isinstance(agent, dict):
        raise CartesiaProtocolError("start.agent is not an object")
    metadata = event.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CartesiaProtocolError("start.metadata is not an object")
    return Start(
        stream_id=stream_id,
        input_format=input_format,
        voice_id=_optional_text(config, "voice_id", "start.config"),
        introduction=_optional_text(agent, "introduction", "start.agent"),
        system_prompt=_optional_text(agent, "system_prompt", "start.agent"),
        metadata=metadata,
    )


# --------------------------------------------------------------------------------------------
# Server role: builders
# --------------------------------------------------------------------------------------------


def ack(
    stream_id: str, config: Mapping[str, object], agent: Mapping[str, object] | None = None
) -> str:
    """The ``ack`` message answering ``start``: the stream id and resolved config/overrides."""
    message: dict[str, object] = {"event": "ack", "stream_id": stream_id, "config": dict(config)}
    if agent is not None:
        message["agent"] = dict(agent)
    return _dumps(message)


def media_output(stream_id: str, payload: str) -> str:
    """A ``media_output`` message carrying base64 ``payload`` (hot path: no JSON encoder)."""
    return _MEDIA_OUTPUT_PREFIX + _quote(stream_id) + _MEDIA_MIDDLE + payload + _MEDIA_SUFFIX


def clear(stream_id: str) -> str:
    """The ``clear`` message (the caller barged in)."""
    return '{"event":"clear","stream_id":' + _quote(stream_id) + "}"


def tool_call(stream_id: str, tool_call_id: str, name: str, arguments: Mapping[str, object]) -> str:
    """A ``custom`` message asking Archer to run tool ``name`` (Archer's convention).

    Raises:
        ValueError: ``name`` is empty or over 64 characters, ``tool_call_id`` empty or over 256,
            or ``arguments`` holds something JSON cannot carry.
    """
    _check_bounded(name, "name", MAX_TOOL_NAME_CHARS)
    _check_bounded(tool_call_id, "tool_call_id", MAX_TOOL_CALL_ID_CHARS)
    return custom(
        stream_id, {TOOL_REQUEST_KEY: name, "id": tool_call_id, "arguments": dict(arguments)}
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _dumps(message: Mapping[str, object]) -> str:
    # allow_nan=False: NaN and Infinity are not JSON and a strict peer refuses the whole message.
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def _bounded_text(parent: Mapping[str, object], key: str, where: str, limit: int) -> str:
    value = _text(parent, key, where)
    if not value or len(value) > limit:
        raise CartesiaProtocolError(f"{where}.{key} is empty or over {limit} characters")
    return value


def _digit(parent: Mapping[str, object], where: str) -> str:
    digit = _text(parent, "dtmf", where)
    if digit not in DTMF_DIGITS:
        raise CartesiaProtocolError(f"{where}.dtmf {digit[:8]!r} is not a DTMF digit")
    return digit


def _check_bounded(value: str, name: str, limit: int) -> None:
    if not value or len(value) > limit:
        raise ValueError(f"{name} is empty or over {limit} characters")
