"""When the agent fails mid-call: which failures are retried, the budget, the hold tone, the
fall-back to a person (issue 16).

Layer: call. ``archer.call.agent_side`` runs the loop (``run_agent_sessions``); this module holds
its parts, each small enough to test alone.

Rules:
- Retried: the agent socket closing abnormally or failing (``AgentClosedError``), unanswered
  pings (``AgentUnresponsiveError``), a fatal ``error`` of kind ``agent_failed``, and every way a
  new session can fail to open (``AgentUnavailableError``). Never retried: a clean hang-up (an
  event, not an error), the agent's idle timeout (its decision), a protocol error or any other
  fatal ``error`` (a new session would fail the same way).
- One outage, one budget: ``attempts`` new sessions within ``window`` seconds of the failure,
  backing off exponentially with full jitter (so N instances do not reconnect in step). A
  session that fails again within ``window`` of opening belongs to the same outage, so an agent
  that accepts and dies at once cannot keep a call looping.
- While no session is there, the caller hears the hold tone (``archer.audio.hold``), from the
  moment of the failure, and what the caller says is dropped and counted, never queued for the
  next session (it would answer a question nobody is waiting for).
- The budget spent: an apology, then ``transfer_to_human`` through the tool runner (the path
  every transfer takes), ending ``agent_lost_transferred``; without ``HUMAN_AGENT_NUMBER``, or
  when the transfer is refused, a hang-up after the apology (``agent_lost``). Business hours are
  not considered: a closed desk is Twilio's or the PBX's to answer.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from archer.audio.clips import speech_clip
from archer.audio.hold import CLIP_SECONDS, FRAME_BYTES, hold_frames
from archer.call.events import ToolCallRequest
from archer.call.items import CLEAR_PLAYBACK, AgentChunk
from archer.errors import (
    AgentClosedError,
    AgentFatalError,
    AgentUnavailableError,
    AgentUnresponsiveError,
)

if TYPE_CHECKING:
    from archer.call.control import CallControl
    from archer.call.items import DownlinkItem, UplinkItem
    from archer.call.playback import Playback
    from archer.call.state import CallState
    from archer.call.tools import ToolRunner

log = structlog.get_logger(__name__)

#: The fatal ``error`` kind that means the agent's process died (a new one can take over).
AGENT_FAILED: Final = "agent_failed"
#: How long the hang-up after the apology waits for Twilio to confirm it played, beyond its
#: length (a stream that never echoes marks must still end).
APOLOGY_GRACE_SECONDS: Final = 3.0
#: The tool the fall-back transfers with, and its call id in the record.
TRANSFER_TOOL: Final = "transfer_to_human"
FALLBACK_TOOL_CALL_ID: Final = "archer-agent-lost-transfer"


@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """The budget of one outage (``AGENT_RECONNECT_ATTEMPTS``, ``AGENT_RECONNECT_WINDOW``)."""

    attempts: int = 3
    window: float = 15.0
    #: The first backoff's ceiling; it doubles per attempt up to ``max_delay`` (full jitter).
    base_delay: float = 0.25
    max_delay: float = 2.0
    #: Where the caller goes when the budget is spent ("" : an apology and a hang-up).
    human_agent_number: str = ""
    #: Dynamic variables a replacing session is given besides the call's own (the resume
    #: hint, ``AGENT_RESUME_VARIABLES``; empty: the new session is opened like the first).
    resume_variables: Mapping[str, str] = attrs.field(factory=dict)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt`` (1, 2, ...): full jitter."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)


def is_retryable(exc: BaseException) -> bool:
    """Whether an agent-side failure is one a new agent session may cure (rules above)."""
    if isinstance(exc, AgentFatalError):
        return exc.code == AGENT_FAILED
    return isinstance(exc, AgentClosedError | AgentUnresponsiveError | AgentUnavailableError)


async def play_hold(downlink: trio.MemorySendChannel[DownlinkItem], playback: Playback) -> None:
    """Loop the hold tone to the caller until cancelled, in the current playback epoch.

    The clip is queued at once (Twilio buffers it) and the next loop follows as it ends, so the
    caller hears it from the first frame with no gap. A clear in the caller's interest (the
    session is back) drops whatever of it Twilio still holds.

    Cancellation: stops; frames already queued play until the clear that follows.
    """
    frames = hold_frames()
    while True:
        for frame in frames:
            await downlink.send(AgentChunk(frame, playback.epoch))
        await trio.sleep(CLIP_SECONDS)


async def drop_caller_audio(uplink: trio.MemoryReceiveChannel[UplinkItem], call: CallState) -> None:
    """Take what the caller says while no agent listens, and count it (never forward it).

    Cancellation: stops; the uplink is left to the next session's forwarder.
    """
    async for _ in uplink:
        call.frames_dropped_in_reconnect += 1


async def stop_hold(downlink: trio.MemorySendChannel[DownlinkItem], playback: Playback) -> None:
    """End the hold tone (and any audio of a dead session): a new epoch, and Twilio's clear.

    Cancellation: the clear may be left unsent; the new epoch already keeps old audio back.
    """
    playback.interrupt()
    playback.open_gate()
    await downlink.send(CLEAR_PLAYBACK)


async def fall_back(
    downlink: trio.MemorySendChannel[DownlinkItem],
    playback: Playback,
    tools: ToolRunner,
    control: CallControl,
    policy: ReconnectPolicy,
) -> None:
    """The budget is spent: apologise, then transfer to a person or hang up.

    Ends the call through ``control`` (which cancels the call, this task included): as
    ``transferred``/``agent_lost_transferred`` when the transfer went through, else as
    ``failed``/``agent_lost`` once the apology has played (or could not be confirmed in time).

    Cancellation: the apology may be cut short; a transfer request Twilio already took stands.
    """
    transfer = bool(policy.human_agent_number) and tools.registry.get(TRANSFER_TOOL) is not None
    clip = "agent_lost_transfer" if transfer else "agent_lost_goodbye"
    # A file read (cached after the first): off the trio thread, as clips.py asks.
    audio = await trio.to_thread.run_sync(speech_clip, clip)
    await stop_hold(downlink, playback)
    for offset in range(0, len(audio), FRAME_BYTES):
        frame = audio[offset : offset + FRAME_BYTES]
        playback.audio_queued(len(frame) // 8)
        await downlink.send(AgentChunk(base64.b64encode(frame).decode("ascii"), playback.epoch))
    log.warning("agent.lost", transfer=transfer)
    if transfer:
        request = ToolCallRequest(
            tool_call_id=FALLBACK_TOOL_CALL_ID,
            name=TRANSFER_TOOL,
            arguments={"reason": "the agent was lost and did not come back"},
            expects_response=False,
        )
        # On success the tool ends the call (as agent_lost_transferred) and this is cancelled.
        await tools.run_for_archer(
            request,
            playback_epoch=playback.epoch,
            end_reasons={"transferred": "agent_lost_transferred"},
        )
    with trio.move_on_after(len(audio) / 8000 + APOLOGY_GRACE_SECONDS):
        await control.for_request(playback.epoch).wait_until_heard()
    control.end("failed", "agent_lost")
