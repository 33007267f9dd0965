"""Cartesia Managed Agents WebSocket wire format (``/v1/agents/websocket``), both roles.

Layer: pure protocol (sans-I/O). No trio, quart, sqlalchemy or structlog; nothing here logs.

Rules: the client role (Archer) builds ``session_create``/``audio_input``/``dtmf_input``/
``client_tool_result`` text and turns each server message into one frozen event with
``parse_server_event``. Unknown server fields are ignored and an unknown event type comes back as
``Unknown`` (returned, not raised: the client logs it once and carries on), because Cartesia adds
events without notice. A known event with a missing or mistyped required field raises
``CartesiaProtocolError`` naming the field. The server role (our Cartesia emulator and test
servers) parses client messages with ``parse_client_event`` as strictly as Cartesia does and
builds server messages. Builders raise ``ValueError`` for local misuse (a bad digit, a bad
variable name); parsers raise ``CartesiaProtocolError`` for a peer's bad input. Audio stays
base64 text and is never decoded here: at 50 frames a second per call, passthrough μ-law goes
from socket to socket as the same string.

Reference: ../shared/reference/cartesia-agents.md §2.B and §4, and the AsyncAPI document
../shared/reference/cartesia-asyncapi/managed-agents-asyncapi.json (version 2026-08-14).

Size (over 400 lines, on purpose): this is one wire format, and each of its messages has a
builder and a parser that must agree on every field name and limit; the module keeps both
roles of each message under one set of constants and one set of field readers (the sections
below: events, client role, server role, helpers), so a change to the protocol is one edit in
one file, and ``tests/contract`` checks the builders of both roles against the vendored schema.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Final

import attrs

from archer.cartesia.fields import boolean as _boolean
from archer.cartesia.fields import lenient_boolean, lenient_number, lenient_object, lenient_text
from archer.cartesia.fields import load_object as _load
from archer.cartesia.fields import note_unknown_keys as _note_unknown_keys
from archer.cartesia.fields import object_field as _object
from archer.cartesia.fields import optional_text as _optional_text
from archer.cartesia.fields import text as _text
from archer.errors import CartesiaProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

DynamicValue = str | int | float | bool

INPUT_FORMATS: Final = frozenset({"mulaw_8000", "pcm_16000", "pcm_24000", "pcm_44100"})
OUTPUT_DELIVERIES: Final = frozenset({"speaking_pace", "as_available"})
ROLES: Final = frozenset({"user", "assistant"})
DTMF_DIGITS: Final = frozenset("0123456789*#")
ERROR_CODES: Final = frozenset(
    {
        "invalid_event",
        "agent_failed",
        "missing_dynamic_variables",
        "invalid_dynamic_variables",
        "dynamic_variables_not_allowed",
    }
)
MAX_DYNAMIC_VARIABLES: Final = 64
MAX_TOOL_CALL_ID_CHARS: Final = 256
MAX_ERROR_TYPE_BYTES: Final = 256

_VARIABLE_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_RESERVED_PREFIXES: Final = ("system__", "secret__")
_SESSION_CREATE_KEYS: Final = frozenset({"type", "audio", "dynamic_variables"})
_SESSION_AUDIO_KEYS: Final = frozenset({"input_format", "output_delivery"})
#: The fields each server event may carry (the AsyncAPI document); others are logged as drift.
_SERVER_EVENT_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "turn_output_text_delta": frozenset({"type", "turn", "role", "text"}),
    "audio_output_clear": frozenset({"type"}),
    "turn_started": frozenset({"type", "turn", "role", "start_time"}),
    "turn_ended": frozenset(
        {
            "type",
            "turn",
            "role",
            "text",
            "interrupted",
            "start_time",
            "end_time",
            "tool_calls",
            "eager_end_timestamp",
        }
    ),
    "client_tool_call": frozenset(
        {"type", "tool_call_id", "tool_name", "parameters", "expects_response"}
    ),
    "dtmf_output": frozenset({"type", "digit"}),
    "session_ready": frozenset({"type", "call_id", "agent_id", "agent_version_id", "audio"}),
    "error": frozenset({"type", "code", "message", "fatal"}),
}


# --------------------------------------------------------------------------------------------
# Server → client events (what Archer receives)
# --------------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class SessionReady:
    """The agent pipeline is ready; audio sent from now on is heard.

    ``input_format`` and ``output_delivery`` echo the session's audio settings; the schema makes
    both optional, so either is ``None`` when the server left it out.
    """

    call_id: str
    agent_id: str | None
    agent_version_id: str | None
    input_format: str | None
    output_delivery: str | None


@attrs.frozen(slots=True)
class AudioOutput:
    """Agent speech: base64 audio in the session's ``input_format``."""

    audio: str


@attrs.frozen(slots=True)
class AudioOutputClear:
    """The caller started speaking: drop every buffered agent frame (may arrive when idle)."""


@attrs.frozen(slots=True)
class DtmfOutput:
    """The agent pressed a key (its ``send_dtmf`` system tool)."""

    digit: str


@attrs.frozen(slots=True)
class ClientToolCall:
    """The agent asks Archer to run a tool; answer with ``client_tool_result`` when expected."""

    tool_call_id: str
    tool_name: str
    parameters: Mapping[str, object]
    expects_response: bool


@attrs.frozen(slots=True)
class TurnStarted:
    """A turn began; ``turn`` is one counter shared by both roles, from 1, strictly increasing."""

    turn: int
    role: str
    start_time: float | None


@attrs.frozen(slots=True)
class TurnOutputTextDelta:
    """Text the agent has just spoken; append verbatim (separator spaces are included)."""

    turn: int
    role: str
    text: str


@attrs.frozen(slots=True)
class TurnEnded:
    """A turn's final text, the version to store (times are seconds since session start)."""

    turn: int
    role: str
    text: str
    interrupted: bool
    start_time: float | None
    end_time: float | None
    tool_calls: tuple[Mapping[str, object], ...]


@attrs.frozen(slots=True)
class Error:
    """The server reports a problem; when ``fatal`` it closes the socket (1008 or 1011) next."""

    code: str
    message: str
    fatal: bool


@attrs.frozen(slots=True)
class Unknown:
    """An event type this module does not know; the client logs it once and ignores it."""

    type: str


ServerEvent = (
    SessionReady
    | AudioOutput
    | AudioOutputClear
    | DtmfOutput
    | ClientToolCall
    | TurnStarted
    | TurnOutputTextDelta
    | TurnEnded
    | Error
    | Unknown
)


# --------------------------------------------------------------------------------------------
# Client → server events (what an emulated agent receives)
# --------------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class SessionCreate:
    """The client's first message: audio settings and per-call dynamic variables."""

    input_format: str
    output_delivery: str
    dynamic_variables: Mapping[str, DynamicValue]


@attrs.frozen(slots=True)
class AudioInput:
    """Caller audio: base64 in the session's ``input_format`` (not decoded here)."""

    audio: str


@attrs.frozen(slots=True)
class DtmfInput:
    """A key the caller pressed."""

    digit: str


@attrs.frozen(slots=True)
class ClientToolResult:
    """The answer to a ``client_tool_call``; ``result`` is what the LLM reads."""

    tool_call_id: str
    result: str
    is_error: bool
    error_type: str | None


ClientEvent = SessionCreate | AudioInput | DtmfInput | ClientToolResult


# --------------------------------------------------------------------------------------------
# Client role: builders
# --------------------------------------------------------------------------------------------

_AUDIO_INPUT_PREFIX: Final = '{"type":"audio_input","audio":"'
_AUDIO_OUTPUT_PREFIX: Final = '{"type":"audio_output","audio":"'
_AUDIO_SUFFIX: Final = '"}'


def session_create(
    *,
    input_format: str,
    dynamic_variables: Mapping[str, DynamicValue],
    output_delivery: str = "speaking_pace",
) -> str:
    """The ``session_create`` message, which must be the first thing sent on the socket.

    ``dynamic_variables`` is left out when empty: the field is optional, and an absent field
    can never trip Cartesia's per-token "dynamic variables not allowed" rule.

    Raises:
        ValueError: an unknown format or delivery mode, or a variable Cartesia would refuse.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format {input_format!r} is not one of {sorted(INPUT_FORMATS)}")
    if output_delivery not in OUTPUT_DELIVERIES:
        raise ValueError(
            f"output_delivery {output_delivery!r} is not one of {sorted(OUTPUT_DELIVERIES)}"
        )
    problem = _dynamic_variables_problem(dynamic_variables)
    if problem is not None:
        raise ValueError(problem)
    message: dict[str, object] = {
        "type": "session_create",
        "audio": {"input_format": input_format, "output_delivery": output_delivery},
    }
    if dynamic_variables:
        message["dynamic_variables"] = dict(dynamic_variables)
    return _dumps(message)


def audio_input(payload: str) -> str:
    """An ``audio_input`` message carrying base64 ``payload`` (hot path: no JSON encoder).

    Base64 text never needs JSON escaping, so two concatenations build the message.
    """
    return _AUDIO_INPUT_PREFIX + payload + _AUDIO_SUFFIX


def dtmf_input(digit: str) -> str:
    """A ``dtmf_input`` message for one key.

    Raises:
        ValueError: ``digit`` is not one of ``0``-``9``, ``*``, ``#``.
    """
    _check_digit(digit)
    return '{"type":"dtmf_input","digit":"' + digit + '"}'


def client_tool_result(
    tool_call_id: str, result: str, *, is_error: bool, error_type: str | None = None
) -> str:
    """A ``client_tool_result`` answering the ``client_tool_call`` with ``tool_call_id``.

    Capping ``result`` is the caller's job: Cartesia replaces one over 4096 bytes with a
    ``result_too_large`` error rather than failing the session.

    Raises:
        ValueError: ``error_type`` is over Cartesia's 256 UTF-8 bytes.
    """
    message: dict[str, object] = {
        "type": "client_tool_result",
        "tool_call_id": tool_call_id,
        "result": result,
        "is_error": is_error,
    }
    if error_type is not None:
        if len(error_type.encode()) > MAX_ERROR_TYPE_BYTES:
            raise ValueError(f"error_type is over {MAX_ERROR_TYPE_BYTES} UTF-8 bytes")
        message["error_type"] = error_type
    return _dumps(message)


# --------------------------------------------------------------------------------------------
# Client role: parsing what the server sends
# --------------------------------------------------------------------------------------------


def parse_server_event(message: str | bytes, ignored: list[str] | None = None) -> ServerEvent:
    """Parse one message from the agent.

    Returns ``Unknown`` for an event type this module does not know. Fields Archer acts on (the
    audio, turn numbers and roles, tool calls, DTMF digits, the session's call id, an error's
    code and ``fatal``) are strict. Fields it only records or logs are lenient: a mistyped one
    reads as absent, and its path (``turn_ended.start_time``) is appended to ``ignored``, as is
    every unknown field of a non-audio event, so the adapter can log drift once per call.

    Raises:
        CartesiaProtocolError: a binary frame, not JSON, not an object, no ``type``, or a
            field Archer acts on missing or of the wrong type.
    """
    event = _load(message)
    kind = event.get("type")
    # audio_output first: it is nearly every message the agent sends (and skips the key check).
    if kind == "audio_output":
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise CartesiaProtocolError("audio_output.audio is missing or not a string")
        return AudioOutput(audio=audio)
    if isinstance(kind, str) and kind in _SERVER_EVENT_KEYS:
        _note_unknown_keys(event, _SERVER_EVENT_KEYS[kind], kind, ignored)
    if kind == "turn_output_text_delta":
        return TurnOutputTextDelta(
            turn=_integer(event, "turn", kind),
            role=lenient_text(event, "role", kind, ignored) or "assistant",
            text=lenient_text(event, "text", kind, ignored) or "",
        )
    if kind == "audio_output_clear":
        return AudioOutputClear()
    if kind == "turn_started":
        return TurnStarted(
            turn=_integer(event, "turn", kind),
            role=_enum(event, "role", kind, ROLES),
            start_time=lenient_number(event, "start_time", kind, ignored),
        )
    if kind == "turn_ended":
        return TurnEnded(
            turn=_integer(event, "turn", kind),
            role=_enum(event, "role", kind, ROLES),
            text=lenient_text(event, "text", kind, ignored) or "",
            interrupted=lenient_boolean(event, "interrupted", kind, ignored) or False,
            start_time=lenient_number(event, "start_time", kind, ignored),
            end_time=lenient_number(event, "end_time", kind, ignored),
            tool_calls=_tool_calls(event, ignored),
        )
    if kind == "client_tool_call":
        return ClientToolCall(
            tool_call_id=_text(event, "tool_call_id", kind),
            tool_name=_text(event, "tool_name", kind),
            parameters=_object(event, "parameters", kind),
            expects_response=_boolean(event, "expects_response", kind),
        )
    if kind == "dtmf_output":
        return DtmfOutput(digit=_digit(event, kind))
    if kind == "session_ready":
        audio = lenient_object(event, "audio", kind, ignored)
        where = "session_ready.audio"
        return SessionReady(
            call_id=_text(event, "call_id", kind),
            agent_id=lenient_text(event, "agent_id", kind, ignored),
            agent_version_id=lenient_text(event, "agent_version_id", kind, ignored),
            input_format=lenient_text(audio, "input_format", where, ignored),
            output_delivery=lenient_text(audio, "output_delivery", where, ignored),
        )
    if kind == "error":
        # The code is not checked against the schema's enum: an error with a code added later
        # must still reach the caller as that error, not be hidden behind a protocol error.
        return Error(
            code=_text(event, "code", kind),
            message=lenient_text(event, "message", kind, ignored) or "",
            fatal=_boolean(event, "fatal", kind),
        )
    if isinstance(kind, str):
        return Unknown(type=kind)
    raise CartesiaProtocolError("message has no type")


def _tool_calls(
    event: Mapping[str, object], ignored: list[str] | None
) -> tuple[Mapping[str, object], ...]:
    """The tool calls a turn reports; only logged, so a malformed list or entry is dropped."""
    calls = event.get("tool_calls")
    if calls is None:
        return ()
    if not isinstance(calls, list):
        if ignored is not None:
            ignored.append("turn_ended.tool_calls")
        return ()
    kept = tuple(
        call
        for call in calls
        if isinstance(call, dict)
        and isinstance(call.get("name"), str)
        and isinstance(call.get("arguments"), dict)
    )
    if len(kept) != len(calls) and ignored is not None:
        ignored.append("turn_ended.tool_calls[]")
    return kept


# --------------------------------------------------------------------------------------------
# Server role: parsing what the client sends (as strictly as Cartesia does)
# --------------------------------------------------------------------------------------------


def parse_client_event(message: str | bytes) -> ClientEvent:
    """Parse one client message the way Cartesia's server does (for emulators).

    Raises:
        CartesiaProtocolError: a binary frame, not JSON, not an object, an unknown type, a
            required field missing or mistyped, an unknown field in ``session_create`` or its
            ``audio``, a value outside its enum or pattern, or an invalid dynamic variable.
    """
    event = _load(message)
    kind = event.get("type")
    if kind == "audio_input":
        return AudioInput(audio=_text(event, "audio", kind))
    if kind == "dtmf_input":
        return DtmfInput(digit=_digit(event, kind))
    if kind == "client_tool_result":
        tool_call_id = _text(event, "tool_call_id", kind)
        if len(tool_call_id) > MAX_TOOL_CALL_ID_CHARS:
            raise CartesiaProtocolError(
                f"client_tool_result.tool_call_id is over {MAX_TOOL_CALL_ID_CHARS} characters"
            )
        is_error = event.get("is_error", False)
        if not isinstance(is_error, bool):
            raise CartesiaProtocolError("client_tool_result.is_error is not a boolean")
        error_type = _optional_text(event, "error_type", kind)
        if error_type is not None and _utf8_length(error_type, "error_type") > MAX_ERROR_TYPE_BYTES:
            raise CartesiaProtocolError(
                f"client_tool_result.error_type is over {MAX_ERROR_TYPE_BYTES} UTF-8 bytes"
            )
        return ClientToolResult(
            tool_call_id=tool_call_id,
            result=_text(event, "result", kind),
            is_error=is_error,
            error_type=error_type,
        )
    if kind == "session_create":
        return _parse_session_create(event)
    if isinstance(kind, str):
        raise CartesiaProtocolError(f"unknown client event type {kind[:40]!r}")
    raise CartesiaProtocolError("message has no type")


def _parse_session_create(event: Mapping[str, object]) -> SessionCreate:
    # Both the event and its audio object are additionalProperties:false in the schema.
    _reject_unknown_keys(event, _SESSION_CREATE_KEYS, "session_create")
    audio = _object(event, "audio", "session_create")
    _reject_unknown_keys(audio, _SESSION_AUDIO_KEYS, "session_create.audio")
    input_format = _enum(audio, "input_format", "session_create.audio", INPUT_FORMATS)
    output_delivery = "speaking_pace"
    if "output_delivery" in audio:
        output_delivery = _enum(audio, "output_delivery", "session_create.audio", OUTPUT_DELIVERIES)
    variables = event.get("dynamic_variables", {})
    if not isinstance(variables, dict):
        raise CartesiaProtocolError("session_create.dynamic_variables is not an object")
    problem = _dynamic_variables_problem(variables)
    if problem is not None:
        raise CartesiaProtocolError(problem)
    return SessionCreate(
        input_format=input_format,
        output_delivery=output_delivery,
        dynamic_variables=variables,
    )


def _reject_unknown_keys(obj: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(key for key in obj if key not in allowed)
    if unknown:
        raise CartesiaProtocolError(f"{where} has unknown field {unknown[0][:40]!r}")


# --------------------------------------------------------------------------------------------
# Server role: builders
# --------------------------------------------------------------------------------------------


def session_ready(
    *,
    call_id: str,
    agent_id: str,
    agent_version_id: str,
    input_format: str,
    output_delivery: str,
) -> str:
    """The ``session_ready`` message, sent once after ``session_create``."""
    return _dumps(
        {
            "type": "session_ready",
            "call_id": call_id,
            "agent_id": agent_id,
            "agent_version_id": agent_version_id,
            "audio": {"input_format": input_format, "output_delivery": output_delivery},
        }
    )


def audio_output(audio: str) -> str:
    """An ``audio_output`` message carrying base64 ``audio`` (hot path: no JSON encoder)."""
    return _AUDIO_OUTPUT_PREFIX + audio + _AUDIO_SUFFIX


def audio_output_clear() -> str:
    """The ``audio_output_clear`` message (the caller barged in)."""
    return '{"type":"audio_output_clear"}'


def dtmf_output(digit: str) -> str:
    """A ``dtmf_output`` message for one key.

    Raises:
        ValueError: ``digit`` is not one of ``0``-``9``, ``*``, ``#``.
    """
    _check_digit(digit)
    return '{"type":"dtmf_output","digit":"' + digit + '"}'


def client_tool_call(
    tool_call_id: str,
    tool_name: str,
    parameters: Mapping[str, object],
    *,
    expects_response: bool,
) -> str:
    """A ``client_tool_call`` asking the client to run ``tool_name`` with ``parameters``."""
    return _dumps(
        {
            "type": "client_tool_call",
            "tool_call_id": tool_call_id,
            "tool_name": tool_name,
            "parameters": dict(parameters),
            "expects_response": expects_response,
        }
    )


def turn_started(turn: int, role: str, start_time: float) -> str:
    """A ``turn_started`` message.

    Raises:
        ValueError: ``role`` is not ``user`` or ``assistant``.
    """
    _check_role(role)
    return _dumps({"type": "turn_started", "turn": turn, "role": role, "start_time": start_time})


def turn_output_text_delta(turn: int, text: str) -> str:
    """A ``turn_output_text_delta`` message; only the assistant's speech is streamed."""
    return _dumps(
        {"type": "turn_output_text_delta", "turn": turn, "role": "assistant", "text": text}
    )


def turn_ended(
    turn: int,
    role: str,
    text: str,
    *,
    interrupted: bool,
    start_time: float,
    end_time: float,
    tool_calls: Iterable[Mapping[str, object]] = (),
) -> str:
    """A ``turn_ended`` message with every field the schema requires.

    Raises:
        ValueError: ``role`` is not ``user`` or ``assistant``.
    """
    _check_role(role)
    return _dumps(
        {
            "type": "turn_ended",
            "turn": turn,
            "role": role,
            "text": text,
            "interrupted": interrupted,
            "start_time": start_time,
            "end_time": end_time,
            "tool_calls": [dict(call) for call in tool_calls],
        }
    )


def error(code: str, message: str, *, fatal: bool) -> str:
    """An ``error`` message; send a close (1008 or 1011) after it when ``fatal``.

    Raises:
        ValueError: ``code`` is not one the schema lists.
    """
    if code not in ERROR_CODES:
        raise ValueError(f"error code {code!r} is not one of {sorted(ERROR_CODES)}")
    return _dumps({"type": "error", "code": code, "message": message, "fatal": fatal})


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _dumps(message: Mapping[str, object]) -> str:
    # allow_nan=False: NaN and Infinity are not JSON and a strict peer refuses the whole message.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _integer(parent: Mapping[str, object], key: str, where: str) -> int:
    value = parent.get(key)
    # bool is an int subclass in Python, but JSON true is not a JSON integer.
    if not isinstance(value, int) or isinstance(value, bool):
        raise CartesiaProtocolError(f"{where}.{key} is missing or not an integer")
    return value


def _utf8_length(text: str, name: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # JSON can carry a lone surrogate; UTF-8 cannot
        raise CartesiaProtocolError(f"{name} is not valid UTF-8 text") from None


def _number(parent: Mapping[str, object], key: str, where: str) -> float:
    value = parent.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CartesiaProtocolError(f"{where}.{key} is missing or not a number")
    try:
        return float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise CartesiaProtocolError(f"{where}.{key} is out of range") from None


def _enum(parent: Mapping[str, object], key: str, where: str, allowed: frozenset[str]) -> str:
    value = _text(parent, key, where)
    if value not in allowed:
        raise CartesiaProtocolError(f"{where}.{key} {value[:40]!r} is not one of {sorted(allowed)}")
    return value


def _digit(parent: Mapping[str, object], where: str) -> str:
    digit = _text(parent, "digit", where)
    if digit not in DTMF_DIGITS:
        raise CartesiaProtocolError(f"{where}.digit {digit[:8]!r} is not a DTMF digit")
    return digit


def _check_digit(digit: str) -> None:
    if digit not in DTMF_DIGITS:
        raise ValueError(f"{digit[:8]!r} is not a DTMF digit (0-9, *, #)")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {sorted(ROLES)}")


def _dynamic_variables_problem(variables: Mapping[str, object]) -> str | None:
    """What Cartesia would refuse in ``variables``, or ``None`` when it would take them all."""
    if len(variables) > MAX_DYNAMIC_VARIABLES:
        return f"dynamic_variables has more than {MAX_DYNAMIC_VARIABLES} entries"
    for name, value in variables.items():
        if not _VARIABLE_NAME.fullmatch(name):
            return f"dynamic_variables name {name[:70]!r} is not 1-64 of [A-Za-z0-9_]"
        if name.startswith(_RESERVED_PREFIXES):
            return f"dynamic_variables name {name!r} uses a reserved prefix"
        if not isinstance(value, str | int | float):  # bool is an int, and allowed
            return f"dynamic_variables.{name} is not a string, number or boolean"
    return None
