"""The tasks of one call: caller → agent, agent → caller, and the two keepalives.

Layer: call. Each function is one child of the per-call nursery in ``archer.call.session``; it
sees ports, channels, the call's ``Transcoder`` and its ``Playback``, nothing else.

Rules: live audio never back-pressures a reader. The Twilio reader hands caller audio on with
``send_nowait`` and counts a drop when the uplink is full; the agent reader does the same for
agent audio. Control events (DTMF, clear, marks) use a blocking ``send``: they are rare and must
not be lost. Each pump owns the channel ends it uses and closes them when it returns, so its
partner sees ``EndOfChannel`` rather than hanging. Nothing here logs per frame, and in μ-law
passthrough a frame costs one channel hop and no decoding (issue 7 measures the rest).

Size (just over 400 lines, on purpose): the pumps share the rules above and the constants that
carry their reasons; each is one function, and the caller → agent forwarder (batching, keypad
capture, silence in a reconnect) is the longest of them.
"""

from __future__ import annotations

import binascii
import contextlib
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Final, assert_never

import structlog
import trio

from archer.audio.dtmf import dtmf_tone_frames
from archer.audio.tone_gate import ToneGate
from archer.call.control import transfer_request
from archer.call.events import (
    AgentAudio,
    AgentClear,
    AgentCustom,
    AgentDtmf,
    AgentHangup,
    AgentNotice,
    AgentTransfer,
    ToolCallRequest,
    TurnEnded,
    TurnStarted,
    TurnTextDelta,
)
from archer.call.items import (
    CAPTURE_ACCEPTED,
    CAPTURE_BUSY,
    CLEAR_PLAYBACK,
    AgentChunk,
    CallerDtmf,
    CallerSilence,
    DownlinkItem,
    SampledAudio,
    SendMark,
    StartCapture,
    StopCapture,
    TurnFinished,
    UplinkItem,
)
from archer.call.playback import MARK_INTERVAL_MS
from archer.call.state import utc_now
from archer.errors import AgentUnresponsiveError, TwilioProtocolError
from archer.twilio.frames import Dtmf, Mark, Media, Stop

if TYPE_CHECKING:
    from archer.audio.transcoder import Transcoder
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
#: How often the inbound keepalive looks for a stalled Twilio stream, and how much silence it
#: sends the agent for each stalled period.
INBOUND_CHECK_MS: Final = 250
#: One frame in this many is timed through Archer (the rest cost nothing extra).
LATENCY_SAMPLE_EVERY: Final = 50
#: Milliseconds per byte of μ-law at 8 kHz is 1/8.
_ULAW_BYTES_PER_MS: Final = 8


def _ulaw_ms(payload: str) -> int:
    """Milliseconds of base64 μ-law audio, from the text's length alone (no decoding)."""
    padding = payload.endswith("=") + payload.endswith("==")
    return (len(payload) // 4 * 3 - padding) // _ULAW_BYTES_PER_MS


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
    with uplink:
        while True:
            try:
                event = await twilio.receive()
            except trio.EndOfChannel:
                return "twilio_disconnected"
            except TwilioProtocolError as exc:
                call.frames_malformed += 1
                if call.frames_malformed == 1:
                    log.warning("twilio.malformed_frame", error=str(exc))
                continue
            match event:
                case Media(payload=payload):
                    call.frames_in += 1
                    item: UplinkItem = payload
                    if call.frames_in % LATENCY_SAMPLE_EVERY == 0:
                        item = SampledAudio(payload, trio.current_time())
                    try:
                        uplink.send_nowait(item)
                    except trio.WouldBlock:
                        call.frames_dropped_to_agent += 1
                case Dtmf(digit=digit):
                    await uplink.send(CallerDtmf(digit))
                case Mark(name=name):
                    heard = playback.mark_echoed(name)
                    if heard is not None:
                        call.turn_heard(heard.turn, heard.ms)
                case Stop():
                    return "caller_hangup"
                case _:
                    assert_never(event)


async def forward_to_agent(
    agent: AgentStream,
    uplink: trio.MemoryReceiveChannel[UplinkItem],
    transcoder: Transcoder,
    call: CallState,
    *,
    batch_frames: int = 1,
    dtmf_to_agent: bool = False,
) -> None:
    """Send caller audio (transcoded if the agent wants PCM) and DTMF to the agent, in order.

    ``batch_frames`` > 1 joins that many frames per ``audio_input`` (``AGENT_AUDIO_BATCH_MS``):
    fewer agent messages for 20 ms more latency per extra frame. A DTMF key or silence fill
    sends what is held first, so order is kept.

    Keypad capture (``archer.call.keypad``): this task owns it. While a capture runs, keys go
    to the capture and each caller frame is replaced by as much silence (counted in
    ``call.frames_silenced_for_pin``). Outside a capture a key reaches the agent only with
    ``dtmf_to_agent`` (``DTMF_TO_AGENT``); otherwise it is dropped and counted in
    ``call.dtmf_dropped``, and so is its tone if the caller's audio carries it: a frame holding
    a keypad tone (and the ``HANGOVER_FRAMES`` after it) is replaced by as much silence,
    counted in ``call.frames_silenced_for_tones`` (``archer.audio.tone_gate``).

    Cancellation: whatever is still in the uplink (or held for a batch) is dropped with the call.
    """
    held: list[str] = []  # frames waiting for a batch to fill (batch_frames > 1 only)
    held_sample: float | None = None  # when a timed frame among those held arrived

    async def send_held() -> None:
        nonlocal held_sample
        if held:
            payload, received_at, held_sample = _join_base64(held), held_sample, None
            held.clear()
            await agent.send_audio(payload)
            if received_at is not None:
                call.latency_samples.append(("to_agent", trio.current_time() - received_at))

    #: Where the running keypad capture's keys go; None when no capture runs.
    capture: trio.MemorySendChannel[str] | None = None
    #: Keys withheld from the agent may also be tones in the audio (archer.audio.tone_gate);
    #: with DTMF_TO_AGENT the agent gets the keys anyway, so no frame is checked at all.
    gate = None if dtmf_to_agent else ToneGate()
    payload: str
    received_at: float | None
    converted: str | None
    # Each capture served is closed when this forwarder ends (its agent session failed, or the
    # call ended), so a tool still reading one sees the end instead of waiting for keys.
    async with uplink, contextlib.AsyncExitStack() as captures_served:
        async for item in uplink:
            if type(item) is str:
                payload, received_at = item, None
            elif type(item) is SampledAudio:
                payload, received_at = item.payload, item.received_at
            elif type(item) is CallerDtmf:
                if capture is not None:
                    try:
                        capture.send_nowait(item.digit)
                    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                        call.dtmf_dropped += 1  # a full capture, or one whose reader has gone
                    continue
                if not dtmf_to_agent:
                    call.dtmf_dropped += 1
                    continue
                await send_held()
                await agent.send_dtmf(item.digit)
                continue
            elif type(item) is StartCapture:
                # The answer fits: the channel is new and its buffer holds CAPTURE_BUFFER items.
                if capture is not None:
                    item.digits.send_nowait(CAPTURE_BUSY)
                    item.digits.close()
                else:
                    capture = captures_served.enter_context(item.digits)
                    capture.send_nowait(CAPTURE_ACCEPTED)
                continue
            elif type(item) is StopCapture:
                if item.digits is capture:
                    capture = None
                continue
            else:
                assert isinstance(item, CallerSilence)
                await send_held()
                await agent.send_audio(transcoder.silence_for_agent(item.milliseconds))
                continue
            if capture is not None:
                call.frames_silenced_for_pin += 1
                converted = transcoder.silence_for_agent(_ulaw_ms(payload))
                if gate is not None:
                    # Only to keep the gate's hangover current: the entry's last key may still
                    # be sounding when the capture ends, and its tail must not follow it.
                    gate.blocks(payload)
            elif gate is not None and gate.blocks(payload):
                call.frames_silenced_for_tones += 1
                converted = transcoder.silence_for_agent(_ulaw_ms(payload))
            else:
                converted = transcoder.to_agent(payload)
            if converted is None:
                continue
            if batch_frames > 1:
                held.append(converted)
                held_sample = received_at if received_at is not None else held_sample
                if len(held) >= batch_frames:
                    await send_held()
                continue
            await agent.send_audio(converted)  # the per-frame path: no batch, no copy
            if received_at is not None:
                call.latency_samples.append(("to_agent", trio.current_time() - received_at))


def _join_base64(payloads: list[str]) -> str:
    """One base64 text of several (padding rules out joining the texts themselves)."""
    if len(payloads) == 1:
        return payloads[0]
    audio = b"".join(binascii.a2b_base64(payload) for payload in payloads)
    return binascii.b2a_base64(audio, newline=False).decode("ascii")


async def receive_from_agent(
    agent: AgentStream,
    downlink: trio.MemorySendChannel[DownlinkItem],
    call: CallState,
    playback: Playback,
    transcoder: Transcoder,
    tools: ToolRunner,
) -> None:
    """Read agent events until the agent hangs up; return normally on ``AgentHangup``.

    Raises whatever the agent port raises (closed abnormally, fatal error, protocol error):
    that ends the call as a failure.

    Cancellation: tool requests already submitted keep running until the call nursery ends.
    """

    def queue(frames: list[str], *, turn: int | None) -> None:
        for frame in frames:
            playback.audio_queued(_ulaw_ms(frame))
            sampled = (
                trio.current_time() if playback.chunks_queued % LATENCY_SAMPLE_EVERY == 0 else None
            )
            try:
                downlink.send_nowait(
                    AgentChunk(frame, playback.epoch, turn, playback.turn_ms, sampled)
                )
            except trio.WouldBlock:
                call.frames_dropped_to_caller += 1

    transfers = 0
    with downlink:
        while True:
            event = await agent.receive()
            match event:
                case AgentAudio(payload=payload):
                    if playback.gated:
                        playback.stale_chunks += 1  # the rest of an interrupted turn
                        continue
                    if playback.turn is not None and playback.turn_ms == 0:
                        call.turn_audible(playback.turn)
                    queue(transcoder.to_caller(payload), turn=playback.turn)
                case AgentClear():
                    # The epoch changes first, so chunks already queued are dropped even before
                    # the downlink reaches the clear.
                    playback.interrupt()
                    transcoder.interrupted()
                    call.barge_ins += 1
                    await downlink.send(CLEAR_PLAYBACK)
                case ToolCallRequest():
                    await tools.submit(event, playback_epoch=playback.epoch)
                case TurnStarted(turn=turn, role=role):
                    call.turn_started(event)
                    if role == "assistant":
                        playback.start_turn(turn)
                case TurnTextDelta():
                    call.turn_text(event)
                case TurnEnded(turn=turn, role=role):
                    call.turn_ended(event)
                    if role == "user":
                        playback.open_gate()
                    elif turn == playback.turn and not playback.gated:
                        queue(transcoder.end_of_turn(), turn=turn)
                        await downlink.send(TurnFinished(turn, playback.turn_ms, playback.epoch))
                case AgentDtmf(digit=digit):
                    queue(dtmf_tone_frames(digit), turn=None)
                    log.info("agent.dtmf", digit=digit)
                case AgentTransfer(target=target):
                    transfers += 1
                    await tools.submit(
                        transfer_request(target, transfers), playback_epoch=playback.epoch
                    )
                case AgentCustom(metadata=metadata):
                    call.agent_event(metadata)
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

    A progress mark follows every ``MARK_INTERVAL_MS`` of a turn's audio and its end, so the
    echoes tell how much of each turn the caller heard.

    Cancellation: queued agent audio is dropped; nothing half-sent is left behind.
    """
    marked_turn, marked_ms = None, 0
    async with downlink:
        async for item in downlink:
            if type(item) is AgentChunk:
                if item.epoch != playback.epoch:
                    continue  # queued before the caller interrupted: never play it
                await twilio.send_media(item.payload)
                call.frames_out += 1
                if item.received_at is not None:
                    call.latency_samples.append(
                        ("to_caller", trio.current_time() - item.received_at)
                    )
                if item.turn is not None:
                    if item.turn != marked_turn:
                        marked_turn, marked_ms = item.turn, 0
                    if item.turn_ms - marked_ms >= MARK_INTERVAL_MS:
                        marked_ms = item.turn_ms
                        await twilio.send_mark(playback.progress_mark(item.turn, item.turn_ms))
            elif type(item) is TurnFinished:
                if item.epoch == playback.epoch and (item.turn, item.turn_ms) != (
                    marked_turn,
                    marked_ms,
                ):
                    marked_turn, marked_ms = item.turn, item.turn_ms
                    await twilio.send_mark(playback.progress_mark(item.turn, item.turn_ms))
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


async def fill_inbound_gaps(
    uplink: trio.MemorySendChannel[UplinkItem],
    call: CallState,
    *,
    media_timeout: float = math.inf,
) -> None:
    """While Twilio's audio has stalled, send the agent silence so its idle rules stay quiet;
    return once it has stalled for ``media_timeout`` seconds (the stream is lost).

    Looks every ``INBOUND_CHECK_MS``: a period with no caller frame is counted in
    ``call.inbound_gap_ms`` and filled with that much silence. Costs no work per frame. Twilio
    sends a frame every 20 ms even in silence, so a stream quiet for ``media_timeout`` has lost
    its caller, whatever its socket says (a socket closed under the route without the route
    being told, or one held open by a peer that sends nothing). Before returning, the call is
    closed at the last check that saw a frame, so its duration is the time the caller was
    there, not the time spent noticing they were gone.

    Cancellation: stops filling; nothing is left behind.
    """
    with uplink:
        seen = call.frames_in
        last_frame_at = trio.current_time()
        while True:
            await trio.sleep(INBOUND_CHECK_MS / 1000)
            now = trio.current_time()
            if call.frames_in != seen:
                seen, last_frame_at = call.frames_in, now
                continue
            quiet = now - last_frame_at
            if quiet >= media_timeout:
                log.warning("twilio.stream_lost", quiet_seconds=round(quiet, 2))
                call.close(now=utc_now() - timedelta(seconds=quiet), clock=last_frame_at)
                return
            call.inbound_gap_ms += INBOUND_CHECK_MS
            # A full uplink means the agent socket is busy anyway: nothing to keep alive.
            with contextlib.suppress(trio.WouldBlock):
                uplink.send_nowait(CallerSilence(INBOUND_CHECK_MS))
