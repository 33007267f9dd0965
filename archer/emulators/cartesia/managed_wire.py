"""What a Managed Agent sends its client (``/v1/agents/websocket``), written from the documents.

Layer: emulator, pure (no trio, no I/O). The Managed session
(``archer.emulators.cartesia.managed``) sends every message through these functions, never through
Archer's own Managed codec, so a test notices when Archer's parser and the peer disagree. Shapes
and field names are those of Cartesia's AsyncAPI document
(../shared/reference/cartesia-asyncapi/managed-agents-asyncapi.json, version 2026-08-14) and
../shared/reference/cartesia-agents.md §2.B and §4; ``tests/emulators`` validates each against
that document's schemas.

Rules: every field a schema marks required is written (``turn_ended`` always carries
``tool_calls``, ``[]`` when none). Text is written with non-ASCII escaped, so a lone surrogate
echoed from a script or a peer can never make the WebSocket layer fail to encode a frame.
"""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import attrs

__all__ = [
    "ERROR_CODES",
    "SentError",
    "audio_output",
    "audio_output_clear",
    "client_tool_call",
    "dtmf_output",
    "error",
    "session_ready",
    "turn_ended",
    "turn_output_text_delta",
    "turn_started",
]

#: ``error.code``: the AsyncAPI's enum. The last three prevent the session from starting.
ERROR_CODES: Final = (
    "invalid_event",
    "agent_failed",
    "missing_dynamic_variables",
    "invalid_dynamic_variables",
    "dynamic_variables_not_allowed",
)
Role = Literal["user", "assistant"]


@attrs.frozen(slots=True)
class SentError:
    """An ``error`` the agent sent; when ``fatal`` the agent closes the socket (1008/1011) next."""

    code: str
    message: str
    fatal: bool


def session_ready(
    *,
    call_id: str,
    agent_id: str,
    agent_version_id: str,
    input_format: str,
    output_delivery: str,
) -> str:
    """``session_ready``: the call's id, the agent version it is pinned to, the audio echoed."""
    return _dumps(
        {
            "type": "session_ready",
            "call_id": call_id,
            "agent_id": agent_id,
            "agent_version_id": agent_version_id,
            "audio": {"input_format": input_format, "output_delivery": output_delivery},
        }
    )


def audio_output(audio: bytes) -> str:
    """``audio_output``: agent speech, base64, in the session's ``input_format``."""
    # Base64 text never needs JSON escaping: no encoder on the message sent most often.
    return '{"type":"audio_output","audio":"' + b64encode(audio).decode("ascii") + '"}'


def audio_output_clear() -> str:
    """``audio_output_clear``: the caller started speaking; drop buffered agent audio."""
    return _dumps({"type": "audio_output_clear"})


def dtmf_output(digit: str) -> str:
    """``dtmf_output``: the agent presses one key (``^[0-9*#]$``)."""
    return _dumps({"type": "dtmf_output", "digit": digit})


def client_tool_call(
    tool_call_id: str, tool_name: str, parameters: Mapping[str, object], *, expects_response: bool
) -> str:
    """``client_tool_call``: the agent asks the client to run ``tool_name``."""
    return _dumps(
        {
            "type": "client_tool_call",
            "tool_call_id": tool_call_id,
            "tool_name": tool_name,
            "parameters": dict(parameters),
            "expects_response": expects_response,
        }
    )


def turn_started(turn: int, role: Role, start_time: float) -> str:
    """``turn_started``: one turn counter for both roles, from 1; seconds since the start."""
    return _dumps({"type": "turn_started", "turn": turn, "role": role, "start_time": start_time})


def turn_output_text_delta(turn: int, text: str) -> str:
    """``turn_output_text_delta``: words the agent just spoke, separator spaces included."""
    return _dumps(
        {"type": "turn_output_text_delta", "turn": turn, "role": "assistant", "text": text}
    )


def turn_ended(
    turn: int,
    role: Role,
    text: str,
    *,
    interrupted: bool,
    start_time: float,
    end_time: float,
    tool_calls: Iterable[Mapping[str, object]] = (),
) -> str:
    """``turn_ended``: the turn's final text; ``tool_calls`` items carry ``name``/``arguments``."""
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


def error(sent: SentError) -> str:
    """``error``: ``code`` (one of ``ERROR_CODES``), a readable ``message``, ``fatal``.

    Raises:
        ValueError: the code is not one the AsyncAPI lists (a bug in the emulator).
    """
    if sent.code not in ERROR_CODES:
        raise ValueError(f"error code {sent.code!r} is not one of {list(ERROR_CODES)}")
    return _dumps(
        {"type": "error", "code": sent.code, "message": sent.message, "fatal": sent.fatal}
    )


def _dumps(message: Mapping[str, object]) -> str:
    # Compact, as Cartesia's examples are; NaN and Infinity are not JSON, so never written.
    return json.dumps(message, separators=(",", ":"), allow_nan=False)
