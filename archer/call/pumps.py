"""The tasks of one call: caller → agent, agent → caller, and the agent keepalive.

Layer: call. Each function is one child of the per-call nursery in ``archer.call.session``; it
sees ports and channels only.

Rules: live audio never back-pressures a reader. The Twilio reader hands caller audio on with
``send_nowait`` and counts a drop when the uplink is full; the agent reader does the same for
agent audio. Control events (DTMF, clear) use a blocking ``send``: they are rare and must not
be lost. Each pump owns the channel ends it uses and closes them when it returns, so its
partner sees ``EndOfChannel`` rather than hanging. Nothing here logs per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, assert_never

import attrs
import structlog
import trio

from archer.call.events import (
    AgentAudio,
    AgentClear,
    AgentDtmf,
    AgentHangup,
    AgentNotice,
    ToolCallRequest,
    TurnEnded,
    TurnStarted,
    TurnTextDelta,
)
from archer.errors import AgentUnresponsiveError, TwilioProtocolError
from archer.twilio.frames import Dtmf, Mark, Media, Stop

if TYPE_CHECKING:
    from archer.call.playback import Playback
    from archer.call.ports import AgentStream, TwilioStream
    from archer.call.state import CallState
    from archer.call.tools import ToolRunner

log = structlog.get_logger(__name__)

#: Caller audio waiting for the agent socket: 10 frames = 200 ms of jitter absorbed before a
#: frame is dropped (the agent drops stale audio anyway; latency matters more than completeness).
UPLINK_BUFFER: Final = 10
#: Agent audio waiting for the Twilio socket. The agent paces at speaking speed, so this only
#: fills if Twilio's socket stalls; 50 chunks is a second or more of speech.
DOWNLINK_BUFFER: Final = 50


@attrs.frozen(slots=True)
class CallerDtmf:
    """A key the caller pressed, on its way to the agent."""

    digit: str


#: Caller audio travels as its bare base64 ``str`` (no wrapper object per frame).
UplinkItem = str | CallerDtmf


@attrs.frozen(slots=True)
class AgentChunk:
    """Agent audio on its way to the caller, tagged with the playback epoch it belongs to
    (``archer.call.playback``): chunks of an interrupted epoch are never sent."""

    payload: str
    epoch: int


@attrs.frozen(slots=True)
class ClearPlayback:
    """Tell Twilio to drop everything it has queued for the caller."""


@attrs.frozen(slots=True)
class SendMark:
    """Ask Twilio to echo ``name`` once the audio queued before it has played."""

    name: str
    epoch: int


CLEAR_PLAYBACK: Final = ClearPlayback()
DownlinkItem = AgentChunk | ClearPlayback | SendMark


async def receive_from_twilio(
    twilio: TwilioStream,
    uplink: trio.MemorySendChannel[UplinkItem],
    call: CallState,
    playback: Playback,
) -> str:
    """Read the caller's stream until it ends; return the ``end_reason``.

    This is the call's lifeline: ``caller_hangup`` on Twilio's ``stop``,
    ``twilio_disconnected`` when the socket closes without one. Malformed frames are counted,
    logged once and skipped: one bad frame from the phone network must not drop a call.

    Cancellation: returns nothing; frames already handed on stay in the uplink.
    """
    malformed = 0
    with uplink:
        while True:
            try:
                event = await twilio.receive()
            except trio.EndOfChannel:
                return "twilio_disconnected"
            except TwilioProtocolError as exc:
                malformed += 1
                if malformed == 1:
                    log.warning("twilio.malformed_frame", error=str(exc))
                continue
            match event:
                case Media(payload=payload):
                    call.frames_in += 1
                    try:
                        uplink.send_nowait(payload)
                    except trio.WouldBlock:
                        call.frames_dropped += 1
                case Dtmf(digit=digit):
                    await uplink.send(CallerDtmf(digit))
                case Mark(name=name):
                    playback.mark_echoed(name)
                case Stop():
                    if malformed:
                        log.warning("twilio.malformed_frames", count=malformed)
                    return "caller_hangup"
                case _:
                    assert_never(event)


async def forward_to_agent(
    agent: AgentStream, uplink: trio.MemoryReceiveChannel[UplinkItem]
) -> None:
    """Send caller audio and DTMF to the agent, in arrival order (μ-law passthrough).

    Cancellation: whatever is still in the uplink is dropped with the call.
    """
    async with uplink:
        async for item in uplink:
            if type(item) is str:
                await agent.send_audio(item)
            else:
                assert isinstance(item, CallerDtmf)
                await agent.send_dtmf(item.digit)


async def receive_from_agent(
    agent: AgentStream,
    downlink: trio.MemorySendChannel[DownlinkItem],
    call: CallState,
    playback: Playback,
    tools: ToolRunner,
) -> None:
    """Read agent events until the agent hangs up; return normally on ``AgentHangup``.

    Raises whatever the agent port raises (closed abnormally, fatal error, protocol error):
    that ends the call as a failure.

    Cancellation: tool requests already submitted keep running until the call nursery ends.
    """
    unsupported_dtmf_logged = False
    with downlink:
        while True:
            event = await agent.receive()
            match event:
                case AgentAudio(payload=payload):
                    try:
                        downlink.send_nowait(AgentChunk(payload, playback.epoch))
                    except trio.WouldBlock:
                        call.frames_dropped += 1
                    else:
                        playback.audio_queued()
                case AgentClear():
                    # The epoch changes first, so chunks already queued are dropped even before
                    # the downlink reaches the clear.
                    playback.interrupt()
                    await downlink.send(CLEAR_PLAYBACK)
                case ToolCallRequest():
                    await tools.submit(event, playback_epoch=playback.epoch)
                case TurnStarted():
                    call.turn_started(event)
                case TurnTextDelta():
                    call.turn_text(event)
                case TurnEnded():
                    call.turn_ended(event)
                case AgentDtmf(digit=digit):
                    # Media Streams has no outbound DTMF message; tones are synthesised on the
                    # audio path. Until then the digit is logged, not sent.
                    if not unsupported_dtmf_logged:
                        log.warning("agent.dtmf_not_played", digit=digit)
                        unsupported_dtmf_logged = True
                case AgentNotice(code=code, message=message):
                    log.warning("agent.notice", code=code, message=message)
                case AgentHangup(reason=reason):
                    log.info("agent.hangup", reason=reason)
                    return
                case _:
                    assert_never(event)


async def play_to_caller(
    twilio: TwilioStream,
    downlink: trio.MemoryReceiveChannel[DownlinkItem],
    call: CallState,
    playback: Playback,
) -> None:
    """Send agent audio, marks and clears to Twilio; the only task writing to that socket.

    Cancellation: queued agent audio is dropped; nothing half-sent is left behind.
    """
    async with downlink:
        async for item in downlink:
            if type(item) is AgentChunk:
                if item.epoch != playback.epoch:
                    continue  # queued before the caller interrupted: never play it
                await twilio.send_media(item.payload)
                call.frames_out += 1
            elif type(item) is SendMark:
                if item.epoch == playback.epoch:  # an older mark was settled by the clear
                    await twilio.send_mark(item.name)
            else:
                await twilio.send_clear()


async def keep_agent_alive(agent: AgentStream, interval: float) -> None:
    """Ping the agent every ``interval`` seconds; an unanswered ping fails the call.

    Cancellation: stops pinging; nothing is left behind.
    """
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(interval) as deadline:
            await agent.ping()
        if deadline.cancelled_caught:
            raise AgentUnresponsiveError(f"agent did not answer a ping within {interval:g} s")
