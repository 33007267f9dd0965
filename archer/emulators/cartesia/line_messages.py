"""What a client sends a Line agent (``/agents/stream``), read as the emulated server reads it.

Layer: emulator, pure (no trio, no I/O). The Line session (``archer.emulators.cartesia.line``)
reads every client message through ``read_line_message``, and tool answers out of ``custom``
metadata through ``tool_result_of``.

Rule: written from Cartesia's documents (../shared/reference/cartesia-agents.md §2.A, §3 and
§5.1), never from Archer's own Line codec, so a test notices when Archer sends
something the agent would refuse. Where Cartesia's behaviour is unknown the reader is strict, to
catch client bugs (§8). Line has no error event, so the session closes 1008 with the problem on
any ``ClientMessageError``:

- a binary frame, text that is not a JSON object, no ``event`` or one that is not ``start``,
  ``media_input``, ``dtmf`` or ``custom``;
- ``start``: an empty or non-string ``stream_id``; no ``config`` object or no
  ``config.input_format`` among the four formats; a non-string ``config.voice_id``; ``agent`` or
  ``metadata`` that is not an object, or an ``agent.introduction``/``system_prompt`` that is not
  a string (other ``config`` keys, such as ``output_audio_delivery``, are ignored);
- ``media_input`` without ``media.payload`` in padded base64;
- ``dtmf`` whose ``dtmf`` is not one of ``0``-``9``, ``*``, ``#``;
- ``custom`` without a ``metadata`` object;
- a ``stream_id`` on any event that is not a string (a missing or different one is tolerated:
  one third-party harness sends none, §2.A).

Tool answers follow Archer's convention over ``custom`` events (the README, "Two Cartesia
protocols"; Line has no tool channel, §5.1): ``{"archer_tool_result": id, "result": text,
"is_error": bool}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

from archer.emulators.cartesia.client_messages import (
    DTMF_DIGITS,
    INPUT_FORMATS,
    ClientMessageError,
    base64_audio,
    load_object,
    object_field,
    optional_text,
    text,
)

__all__ = [
    "Custom",
    "Dtmf",
    "LineClientEvent",
    "LineToolResult",
    "MediaInput",
    "Start",
    "read_line_message",
    "tool_result_of",
]

#: The ``custom`` metadata key that marks an answer to one of the agent's tool calls.
TOOL_RESULT_KEY: Final = "archer_tool_result"
MAX_TOOL_CALL_ID_CHARS: Final = 256


@attrs.frozen(slots=True)
class Start:
    """The first message: stream id (``None``: the server picks one), format, overrides."""

    stream_id: str | None
    input_format: str
    voice_id: str | None = None
    introduction: str | None = None
    system_prompt: str | None = None
    metadata: Mapping[str, object] = attrs.Factory(dict)


@attrs.frozen(slots=True)
class MediaInput:
    """Caller audio, decoded from base64, in the ``start`` input format."""

    stream_id: str | None
    audio: bytes = attrs.field(repr=lambda audio: f"<{len(audio)} bytes>")


@attrs.frozen(slots=True)
class Dtmf:
    """A key the caller pressed."""

    digit: str


@attrs.frozen(slots=True)
class Custom:
    """Free-form metadata for the agent's code."""

    metadata: Mapping[str, object]


@attrs.frozen(slots=True)
class LineToolResult:
    """An answer to one of the agent's tool calls, carried by ``custom`` metadata."""

    tool_call_id: str
    result: str
    is_error: bool


LineClientEvent = Start | MediaInput | Dtmf | Custom


def read_line_message(message: str | bytes | None) -> LineClientEvent:
    """Read one client message as the emulated Line agent does.

    Raises:
        ClientMessageError: the agent refuses it; see the module's rules.
    """
    event = load_object(message)
    kind = event.get("event")
    if kind == "media_input":
        stream_id = optional_text(event, "stream_id", kind)
        payload = text(object_field(event, "media", kind), "payload", "media_input.media")
        return MediaInput(stream_id, base64_audio(payload, "media_input.media.payload"))
    if kind == "dtmf":
        optional_text(event, "stream_id", kind)
        digit = text(event, "dtmf", kind)
        if digit not in DTMF_DIGITS:
            raise ClientMessageError(
                f"dtmf.dtmf {digit[:8]!r} is not a DTMF digit (0-9, *, #)", event=kind
            )
        return Dtmf(digit)
    if kind == "custom":
        optional_text(event, "stream_id", kind)
        return Custom(object_field(event, "metadata", kind))
    if kind == "start":
        return _start(event)
    if isinstance(kind, str):
        raise ClientMessageError(f"{kind[:40]!r} is not a client event", event=None)
    raise ClientMessageError("message has no event", event=None)


def _start(event: Mapping[str, object]) -> Start:
    kind = "start"
    stream_id = optional_text(event, "stream_id", kind)
    if stream_id == "":
        raise ClientMessageError("start.stream_id is empty", event=kind)
    config = object_field(event, "config", kind)
    input_format = text(config, "input_format", "start.config")
    if input_format not in INPUT_FORMATS:
        raise ClientMessageError(
            f"start.config.input_format {input_format[:40]!r} is not one of {list(INPUT_FORMATS)}",
            event=kind,
        )
    agent = object_field(event, "agent", kind, required=False)
    return Start(
        stream_id=stream_id,
        input_format=input_format,
        voice_id=optional_text(config, "voice_id", "start.config"),
        introduction=optional_text(agent, "introduction", "start.agent"),
        system_prompt=optional_text(agent, "system_prompt", "start.agent"),
        metadata=object_field(event, "metadata", kind, required=False),
    )


def tool_result_of(metadata: Mapping[str, object]) -> LineToolResult | None:
    """The tool answer ``custom`` metadata carries, or ``None`` when it carries none.

    Raises:
        ClientMessageError: ``archer_tool_result`` is there but it is not an id of 1-256
            characters, or ``result`` is not a string, or ``is_error`` not a boolean.
    """
    if TOOL_RESULT_KEY not in metadata:
        return None
    where = "custom.metadata"
    tool_call_id = text(metadata, TOOL_RESULT_KEY, where)
    if not tool_call_id or len(tool_call_id) > MAX_TOOL_CALL_ID_CHARS:
        raise ClientMessageError(
            f"{where}.{TOOL_RESULT_KEY} is empty or over {MAX_TOOL_CALL_ID_CHARS} characters",
            event="custom",
        )
    result = text(metadata, "result", where)
    is_error = metadata.get("is_error")
    if not isinstance(is_error, bool):
        raise ClientMessageError(f"{where}.is_error is missing or not a boolean", event="custom")
    return LineToolResult(tool_call_id, result, is_error)
