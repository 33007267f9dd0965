"""What travels on the call's two channels: the uplink (caller → agent) and the downlink
(agent → caller).

Layer: call. Plain frozen values and nothing else, so every end of a channel imports them from
here: the pumps in ``archer.call.pumps`` and the tools' ``CallControl``, which places marks on the
downlink, without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    import trio


@attrs.frozen(slots=True)
class CallerDtmf:
    """A key the caller pressed, on its way to the agent."""

    digit: str


@attrs.frozen(slots=True)
class SampledAudio:
    """One caller frame in ``LATENCY_SAMPLE_EVERY`` (``archer.call.pumps``), timed from Twilio's
    socket to the agent's."""

    payload: str
    received_at: float


@attrs.frozen(slots=True)
class CallerSilence:
    """Silence to send the agent while Twilio's audio has stalled."""

    milliseconds: int


@attrs.frozen(slots=True, eq=False)
class StartCapture:
    """A keypad capture begins (``archer.call.keypad``): from now on the forwarder withholds
    keypad digits and caller audio from the agent and sends the digits to ``digits``.

    The forwarder answers on ``digits`` first: ``CAPTURE_ACCEPTED``, or ``CAPTURE_BUSY`` (and
    closes it) when another capture is running.
    """

    digits: trio.MemorySendChannel[str]


@attrs.frozen(slots=True, eq=False)
class StopCapture:
    """The capture that owns ``digits`` is over: forwarding to the agent resumes."""

    digits: trio.MemorySendChannel[str]


#: The forwarder's first answer to a ``StartCapture``.
CAPTURE_ACCEPTED: Final = "accepted"
CAPTURE_BUSY: Final = "busy"

#: Caller audio travels as its bare base64 ``str`` (no wrapper object per frame).
UplinkItem = str | SampledAudio | CallerDtmf | CallerSilence | StartCapture | StopCapture


@attrs.frozen(slots=True)
class AgentChunk:
    """Agent audio (base64 μ-law) on its way to the caller.

    ``epoch``: chunks of an interrupted epoch are never sent (``archer.call.playback``).
    ``turn``/``turn_ms``: the agent turn it belongs to and how much of that turn has been
    queued up to and including it (None for audio outside a turn, such as DTMF tones).
    """

    payload: str
    epoch: int
    turn: int | None = None
    turn_ms: int = 0
    #: Set on one chunk in ``LATENCY_SAMPLE_EVERY``: when the agent's message arrived.
    received_at: float | None = None


@attrs.frozen(slots=True)
class ClearPlayback:
    """Tell Twilio to drop everything it has queued for the caller."""


@attrs.frozen(slots=True)
class SendMark:
    """Ask Twilio to echo ``name`` once the audio queued before it has played."""

    name: str
    epoch: int


@attrs.frozen(slots=True)
class TurnFinished:
    """The agent's turn is over: mark its end so its last audio counts as heard when played."""

    turn: int
    turn_ms: int
    epoch: int


CLEAR_PLAYBACK: Final = ClearPlayback()
DownlinkItem = AgentChunk | ClearPlayback | SendMark | TurnFinished
