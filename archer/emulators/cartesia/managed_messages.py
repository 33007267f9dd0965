"""What a client sends a Managed Agent (``/v1/agents/websocket``), read as Cartesia reads it.

Layer: emulator, pure (no trio, no I/O). The Managed session
(``archer.emulators.cartesia.managed``) reads every client message through
``read_managed_message``.

Rule: written from Cartesia's documents (../shared/reference/cartesia-agents.md §2.B and §4; the
AsyncAPI document ../shared/reference/cartesia-asyncapi/managed-agents-asyncapi.json, version
2026-08-14), never from Archer's own Managed codec, so a test notices when Archer sends something
the real server would refuse. What it refuses, with the field named (``ClientMessageError``):

- a binary frame, text that is not a JSON object, no ``type`` or one that is not a client event
  (``session_create``, ``audio_input``, ``dtmf_input``, ``client_tool_result``): ``event`` is
  ``None`` and the server treats it as fatal;
- ``session_create``: a field other than ``type``, ``audio``, ``dynamic_variables`` (the event
  and its ``audio`` are ``additionalProperties: false``), no ``audio.input_format`` or one outside
  the four formats, an ``output_delivery`` other than ``speaking_pace``/``as_available``, and
  ``dynamic_variables`` that are not an object of at most 64 string, number or boolean values
  named by 1-64 of ``[A-Za-z0-9_]`` without a ``system__``/``secret__`` prefix (``code``
  ``invalid_dynamic_variables``);
- ``audio_input`` without a string ``audio`` (the base64 is checked when it is heard: audio sent
  before ``session_ready`` is dropped unread, as Cartesia documents);
- ``dtmf_input`` whose ``digit`` is not one of ``0``-``9``, ``*``, ``#``;
- ``client_tool_result`` without a string ``tool_call_id`` of at most 256 characters or a string
  ``result``, with a non-boolean ``is_error`` or an ``error_type`` over 256 UTF-8 bytes.

Other events carry no ``additionalProperties: false``, so their unknown fields are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import attrs

from archer.emulators.cartesia.client_messages import (
    DTMF_DIGITS,
    INPUT_FORMATS,
    ClientMessageError,
    load_object,
    object_field,
    optional_text,
    text,
)

__all__ = [
    "AudioInput",
    "ClientToolResult",
    "DtmfInput",
    "DynamicValue",
    "ManagedClientEvent",
    "SessionCreate",
    "read_managed_message",
]

DynamicValue = str | int | float | bool

OUTPUT_DELIVERIES: Final = ("speaking_pace", "as_available")
MAX_DYNAMIC_VARIABLES: Final = 64
MAX_TOOL_CALL_ID_CHARS: Final = 256
MAX_ERROR_TYPE_BYTES: Final = 256
_VARIABLE_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_RESERVED_PREFIXES: Final = ("system__", "secret__")
_SESSION_CREATE_KEYS: Final = frozenset({"type", "audio", "dynamic_variables"})
_AUDIO_KEYS: Final = frozenset({"input_format", "output_delivery"})


@attrs.frozen(slots=True)
class SessionCreate:
    """The first message: the audio format (agent audio comes back in it) and the variables."""

    input_format: str
    output_delivery: str
    dynamic_variables: Mapping[str, DynamicValue]


@attrs.frozen(slots=True)
class AudioInput:
    """Caller audio, still base64 (decoded only once the session is ready to hear it)."""

    audio: str


@attrs.frozen(slots=True)
class DtmfInput:
    """A key the caller pressed."""

    digit: str


@attrs.frozen(slots=True)
class ClientToolResult:
    """The answer to a ``client_tool_call``: ``result`` is what the agent's model reads."""

    tool_call_id: str
    result: str
    is_error: bool = False
    error_type: str | None = None


ManagedClientEvent = SessionCreate | AudioInput | DtmfInput | ClientToolResult


def read_managed_message(message: str | bytes | None) -> ManagedClientEvent:
    """Read one client message as the Managed Agents server does.

    Raises:
        ClientMessageError: the server would refuse it; see the module's rules.
    """
    event = load_object(message)
    kind = event.get("type")
    if kind == "audio_input":
        return AudioInput(text(event, "audio", kind))
    if kind == "dtmf_input":
        digit = text(event, "digit", kind)
        if digit not in DTMF_DIGITS:
            raise ClientMessageError(
                f"dtmf_input.digit {digit[:8]!r} is not a DTMF digit (0-9, *, #)", event=kind
            )
        return DtmfInput(digit)
    if kind == "client_tool_result":
        return _client_tool_result(event)
    if kind == "session_create":
        return _session_create(event)
    if isinstance(kind, str):
        raise ClientMessageError(f"{kind[:40]!r} is not a client event", event=None)
    raise ClientMessageError("message has no type", event=None)


def _client_tool_result(event: Mapping[str, object]) -> ClientToolResult:
    kind = "client_tool_result"
    tool_call_id = text(event, "tool_call_id", kind)
    if len(tool_call_id) > MAX_TOOL_CALL_ID_CHARS:
        raise ClientMessageError(
            f"{kind}.tool_call_id is over {MAX_TOOL_CALL_ID_CHARS} characters", event=kind
        )
    result = text(event, "result", kind)
    is_error = event.get("is_error", False)
    if not isinstance(is_error, bool):
        raise ClientMessageError(f"{kind}.is_error is not a boolean", event=kind)
    error_type = optional_text(event, "error_type", kind)
    if error_type is not None:
        try:
            size = len(error_type.encode("utf-8"))
        except UnicodeEncodeError:  # JSON can carry a lone surrogate; UTF-8 cannot
            raise ClientMessageError(f"{kind}.error_type is not UTF-8 text", event=kind) from None
        if size > MAX_ERROR_TYPE_BYTES:
            raise ClientMessageError(
                f"{kind}.error_type is over {MAX_ERROR_TYPE_BYTES} UTF-8 bytes", event=kind
            )
    return ClientToolResult(tool_call_id, result, is_error, error_type)


def _session_create(event: Mapping[str, object]) -> SessionCreate:
    kind = "session_create"
    _no_other_keys(event, _SESSION_CREATE_KEYS, kind)
    audio = object_field(event, "audio", kind)
    _no_other_keys(audio, _AUDIO_KEYS, f"{kind}.audio")
    input_format = text(audio, "input_format", f"{kind}.audio")
    if input_format not in INPUT_FORMATS:
        raise ClientMessageError(
            f"{kind}.audio.input_format {input_format[:40]!r} is not one of {list(INPUT_FORMATS)}",
            event=kind,
        )
    output_delivery = "speaking_pace"  # the schema's default
    if "output_delivery" in audio:
        output_delivery = text(audio, "output_delivery", f"{kind}.audio")
        if output_delivery not in OUTPUT_DELIVERIES:
            raise ClientMessageError(
                f"{kind}.audio.output_delivery {output_delivery[:40]!r} is not one of "
                f"{list(OUTPUT_DELIVERIES)}",
                event=kind,
            )
    variables = event.get("dynamic_variables", {})
    if not isinstance(variables, dict):
        raise ClientMessageError(
            f"{kind}.dynamic_variables is not an object",
            event=kind,
            code="invalid_dynamic_variables",
        )
    problem = _variables_problem(variables)
    if problem is not None:
        raise ClientMessageError(problem, event=kind, code="invalid_dynamic_variables")
    return SessionCreate(input_format, output_delivery, variables)


def _variables_problem(variables: Mapping[str, object]) -> str | None:
    """What Cartesia refuses in ``dynamic_variables``, or ``None`` (reference §2.B)."""
    if len(variables) > MAX_DYNAMIC_VARIABLES:
        return f"dynamic_variables has more than {MAX_DYNAMIC_VARIABLES} entries"
    for name, value in variables.items():
        if not _VARIABLE_NAME.fullmatch(name):
            return f"dynamic_variables name {name[:70]!r} is not 1-64 of [A-Za-z0-9_]"
        if name.startswith(_RESERVED_PREFIXES):
            return f"dynamic_variables name {name!r} uses a reserved prefix"
        # JSON true/false read as bool, an int subclass: both are allowed values.
        if not isinstance(value, str | int | float):
            return f"dynamic_variables.{name} is not a string, number or boolean"
    return None


def _no_other_keys(obj: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(key for key in obj if key not in allowed)
    if unknown:
        raise ClientMessageError(
            f"{where} has unknown field {unknown[0][:40]!r}", event="session_create"
        )
