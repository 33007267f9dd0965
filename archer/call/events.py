"""What an agent can tell a call, whatever protocol carries it.

Layer: call vocabulary; pure (attrs only). The Cartesia adapters translate their wire events
into these, so the call layer is written against one set of nouns and never imports a vendor
protocol module.

Audio travels as base64 text (``payload``) because both peers speak base64 in JSON: in μ-law
passthrough the string goes from one socket to the other without being decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

Role = Literal["user", "assistant"]


@attrs.frozen(slots=True)
class AgentAudio:
    """A chunk of agent speech, base64, in the agent's audio format."""

    payload: str


@attrs.frozen(slots=True)
class AgentClear:
    """The caller barged in: drop every queued agent frame and stop playback."""


@attrs.frozen(slots=True)
class AgentDtmf:
    """The agent sends a DTMF digit (``0``-``9``, ``*``, ``#``) down the phone line."""

    digit: str


@attrs.frozen(slots=True)
class ToolCallRequest:
    """The agent asks Archer to run one of its tools."""

    tool_call_id: str
    name: str
    arguments: Mapping[str, object]
    expects_response: bool


@attrs.frozen(slots=True)
class TurnStarted:
    """A turn of the conversation began (``start_time``: seconds since the session began)."""

    turn: int
    role: Role
    start_time: float | None


@attrs.frozen(slots=True)
class TurnTextDelta:
    """More text of an agent turn, to be appended verbatim."""

    turn: int
    text: str


@attrs.frozen(slots=True)
class TurnEnded:
    """A turn finished, with its final text."""

    turn: int
    role: Role
    text: str
    interrupted: bool
    start_time: float | None
    end_time: float | None


@attrs.frozen(slots=True)
class AgentNotice:
    """A non-fatal error the agent reported about something Archer sent; the call goes on."""

    code: str
    message: str


@attrs.frozen(slots=True)
class AgentTransfer:
    """The agent asks Archer to move the call (Line's ``transfer_call``).

    ``target`` is an E.164 number or a SIP URI; ``None`` when the agent named none Archer can
    dial, and the call then goes to the bank's own human-agent number.
    """

    target: str | None


@attrs.frozen(slots=True)
class AgentCustom:
    """Free-form data the agent sent (Line's ``custom``); recorded on the call."""

    metadata: Mapping[str, object]


@attrs.frozen(slots=True)
class AgentHangup:
    """The agent ended the call cleanly (WebSocket close 1000); always the last event."""

    reason: str


AgentEvent = (
    AgentAudio
    | AgentClear
    | AgentDtmf
    | ToolCallRequest
    | TurnStarted
    | TurnTextDelta
    | TurnEnded
    | AgentNotice
    | AgentTransfer
    | AgentCustom
    | AgentHangup
)
