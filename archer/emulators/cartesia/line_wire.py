"""What a Line agent sends on the Calls API (``/agents/stream``), written from the documents.

Layer: emulator. The Line session (``archer.emulators.cartesia.line``) sends every message
through these functions, never through Archer's own Line codec, so a test
notices when Archer's parser and the peer disagree. Shapes are those of the Calls API reference
and the Line SDK's wire models (../shared/reference/cartesia-agents.md §2.A and §4;
``cartesia-line`` 0.2.19); ``tool_call`` is Archer's own convention over ``custom`` events (the
README, "Two Cartesia protocols").
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from archer.emulators.cartesia.script import Transfer


def ack(stream_id: str, config: Mapping[str, object], agent: Mapping[str, object] | None) -> str:
    """``ack``: the stream id, the resolved config, and the overrides when any were given."""
    message: dict[str, object] = {"event": "ack", "stream_id": stream_id, "config": dict(config)}
    if agent:
        message["agent"] = dict(agent)
    return _dumps(message)


def media_output(stream_id: str, payload: str) -> str:
    """``media_output``: base64 audio in the stream's format."""
    return _dumps({"event": "media_output", "stream_id": stream_id, "media": {"payload": payload}})


def clear(stream_id: str) -> str:
    """``clear``: the caller barged in."""
    return _dumps({"event": "clear", "stream_id": stream_id})


def dtmf(stream_id: str, digit: str) -> str:
    """``dtmf``: the agent presses one key."""
    return _dumps({"event": "dtmf", "stream_id": stream_id, "dtmf": digit})


def tool_call(stream_id: str, tool_call_id: str, name: str, arguments: Mapping[str, object]) -> str:
    """A ``custom`` event asking Archer to run a tool (``archer_tool``, ``id``, ``arguments``)."""
    metadata = {"archer_tool": name, "id": tool_call_id, "arguments": dict(arguments)}
    return _dumps({"event": "custom", "stream_id": stream_id, "metadata": metadata})


def transfer_call(stream_id: str, step: Transfer) -> str:
    """A ``transfer_call`` as agents send it, written here rather than by Archer's codec.

    ``destination`` is the shape of the Line SDK's wire models (``cartesia-line`` 0.2.19,
    ``TransferOutput.transfer_destination``); ``nested`` is the shape of the Calls API reference
    (``transfer.target_phone_number``); ``flat`` is what some agents send. Written by hand so
    that a test notices when Archer's parser and the peers disagree.
    """
    message: dict[str, object] = {"event": "transfer_call", "stream_id": stream_id}
    if step.shape == "destination":
        message["transfer_destination"] = {"type": step.kind, "value": step.target}
    elif step.shape == "nested":
        message["transfer"] = {"target_phone_number": step.target}
    else:
        message["target_phone_number"] = step.target
    return _dumps(message)


def _dumps(message: Mapping[str, object]) -> str:
    # Compact, as Cartesia's own examples are.
    return json.dumps(message, separators=(",", ":"))
