"""What one Cartesia emulator connection did, and the clips its agent speaks.

Layer: emulator, pure (no I/O beyond loading a packaged clip). ``EmulatedSession`` is the record
tests and the demo inspect; the server (``archer.emulators.cartesia.server``) makes one per
connection and the session players (``player``, ``managed``, ``line``) fill it in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal

import attrs
import trio

from archer.audio import clips
from archer.emulators.cartesia.line_messages import LineClientEvent
from archer.emulators.cartesia.managed_messages import DynamicValue, ManagedClientEvent
from archer.emulators.cartesia.managed_wire import SentError

__all__ = [
    "SAMPLE_RATES",
    "Clip",
    "ClipSource",
    "EmulatedSession",
    "EmulatedToolCall",
    "ToolResult",
    "bundled_clip",
    "chunk_bytes",
]

SAMPLE_RATES: Final = {
    "mulaw_8000": 8000,
    "pcm_16000": 16000,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
}


@attrs.frozen(slots=True)
class Clip:
    """Something the agent can say: 8 kHz μ-law ``audio`` and the words it speaks."""

    audio: bytes = attrs.field(repr=lambda audio: f"<{len(audio)} bytes>")
    text: str


ClipSource = Callable[[str], Clip]


def bundled_clip(name: str) -> Clip:
    """Clip ``name`` from Archer's recorded speech (``archer.audio.clips``).

    Raises:
        KeyError: no clip has that name.
    """
    return Clip(audio=clips.speech_clip(name), text=clips.clip_text(name))


@attrs.frozen(slots=True)
class EmulatedToolCall:
    """A ``client_tool_call`` the agent sent, with its placeholders filled in."""

    tool_call_id: str
    name: str
    parameters: Mapping[str, object]


@attrs.frozen(slots=True)
class ToolResult:
    """The client's answer to an ``EmulatedToolCall``, whichever protocol carried it.

    ``error_type`` is Managed's (logged by Cartesia, never seen by the model); Line's answers,
    over ``custom`` events, have none.
    """

    tool_call_id: str
    result: str
    is_error: bool
    error_type: str | None = None


@attrs.define
class EmulatedSession:
    """Everything one connection did, for tests and the demo to inspect."""

    call_id: str
    agent_version_id: str
    cartesia_version: str | None
    #: Which endpoint the client used: Managed Agents or Line (``/agents/stream``).
    protocol: Literal["managed", "line"] = "managed"
    #: The agent id in the path the client connected to.
    agent_id: str = "agent_emulated"
    input_format: str | None = None
    output_delivery: str | None = None
    dynamic_variables: dict[str, DynamicValue] = attrs.Factory(dict)
    #: Line: the ``stream_id`` (the client's, or ``sid_`` + 16 hex) and ``start.metadata``.
    stream_id: str | None = None
    metadata: dict[str, object] = attrs.Factory(dict)
    #: Every client event that parsed, in order (refused ones are in ``errors_sent``).
    events: list[ManagedClientEvent | LineClientEvent] = attrs.Factory(list)
    dtmf_digits: list[str] = attrs.Factory(list)
    tool_calls: list[EmulatedToolCall] = attrs.Factory(list)
    #: Answers to ``tool_calls``, by tool call id.
    tool_results: dict[str, ToolResult] = attrs.Factory(dict)
    #: Line: ``custom`` metadata from the client that was not a tool result.
    custom_received: list[dict[str, object]] = attrs.Factory(list)
    #: Line: numbers the agent asked the client to transfer the call to.
    transfers: list[str] = attrs.Factory(list)
    #: What ``collect_dtmf`` and ``tool`` steps stored with ``into``.
    variables: dict[str, str] = attrs.Factory(dict)
    #: Audio messages that arrived before the session was ready (dropped, as Cartesia does).
    audio_dropped_before_ready: int = 0
    #: Caller audio heard once ready, raw, in ``input_format``.
    caller_audio: bytearray = attrs.Factory(bytearray)
    #: Managed ``error`` events sent (Line has no error event: it closes 1008 instead).
    errors_sent: list[SentError] = attrs.Factory(list)
    #: This session closes 1011 ("agent failed", cartesia-agents.md §5) halfway through its
    #: first spoken turn (``CartesiaEmulator.fail_mid_turn``; issue 16).
    fail_mid_turn: bool = False
    ended_by: Literal["agent", "client"] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    #: Set when the connection is over, whoever ended it.
    ended: trio.Event = attrs.Factory(trio.Event)


def chunk_bytes(input_format: str) -> int:
    """Bytes of 20 ms of audio in ``input_format`` (μ-law 1 byte a sample, PCM 2)."""
    width = 1 if input_format == "mulaw_8000" else 2
    return SAMPLE_RATES[input_format] * width // 50
