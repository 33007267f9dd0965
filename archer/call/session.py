"""One phone call: the per-call nursery, what ends it, and how its record is flushed.

Layer: call. Written against the ports in ``archer.call.ports``; it never sees a socket or a SQL
session.

Rules (../shared/ARCHITECTURE.md §3):
- ``run_call`` owns the call's nursery. The agent session is opened before it (in
  ``bridge_call``) and outlives every child. Inside it, the Twilio side (reader, writer, stall
  watch, recorder) runs directly, and the agent side (reader, forwarder, tools, keepalive) in a
  nursery of its own (``run_agent_side``) on clones of the channel ends, so the agent half can
  end and be replaced while the Twilio half and its channels stay up: ``run_agent_sessions``
  opens a new session when one fails (issue 16; the rules are in ``archer.call.reconnect``).
  The tool supervisor belongs to the call, so a tool outlives the session that asked for it.
- The Twilio reader runs in the nursery body and is the call's lifeline: a ``stop`` or a closed
  socket ends the call normally and cancels the siblings; a stream that sends nothing for
  ``TWILIO_MEDIA_TIMEOUT`` ends it as ``twilio_lost``. The agent hanging up cleanly does the
  same from its side.
- Any other failure propagates out of the nursery as an exception group; ``bridge_call`` turns
  it into ``status=failed`` and an ``end_reason`` with ``except*`` and never re-raises, so the
  route's ``finally`` always has a finished call to flush.
- ``flush_call_record`` runs shielded and time-boxed, so a cancelled call is still recorded.

The agent's half, and the sessions that replace one another in it, are in
``archer.call.agent_side``.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from archer.audio.transcoder import transcoder_for
from archer.call.agent_side import AgentReplacement, AgentSideParts, leaves, run_agent_sessions
from archer.call.control import CallControl
from archer.call.items import DownlinkItem, UplinkItem
from archer.call.playback import Playback
from archer.call.ports import AgentSession
from archer.call.pumps import (
    DOWNLINK_BUFFER,
    UPLINK_BUFFER,
    fill_inbound_gaps,
    play_to_caller,
    receive_from_twilio,
)
from archer.call.reconnect import (
    ReconnectPolicy,
    is_retryable,
)
from archer.call.recorder import CallRecorder
from archer.call.tools import CallerVerification, ToolContext, ToolRunner
from archer.errors import (
    AgentClosedError,
    AgentFatalError,
    AgentIdleError,
    AgentUnavailableError,
    AgentUnresponsiveError,
    ProtocolError,
    StoreError,
)
from archer.logs import mask_phone

if TYPE_CHECKING:
    from collections.abc import Mapping

    from archer.audio.transcoder import Transcoder
    from archer.call.ports import (
        AgentConnector,
        AgentStream,
        CallStore,
        RecordSpool,
        TwilioStream,
    )
    from archer.call.records import CallRecord
    from archer.call.session_facts import SessionValue
    from archer.call.state import CallState
    from archer.call.tools import ToolRegistry
    from archer.settings import CallLimits

log = structlog.get_logger(__name__)

#: Writing a record to the local spool is a small fsynced append; this bounds a sick disk.
SPOOL_TIMEOUT: Final = 5.0


async def run_call(
    call: CallState,
    twilio: TwilioStream,
    agent: AgentStream | None,
    tools: ToolRegistry,
    *,
    limits: CallLimits,
    transcoder: Transcoder,
    agent_batch_frames: int = 1,
    recorder: CallRecorder | None = None,
    dtmf_to_agent: bool = False,
    replacement: AgentReplacement | None = None,
) -> None:
    """Bridge one call until either side hangs up or the call reaches its maximum length.

    ``recorder``, if given, writes the record while the call runs (``archer.call.recorder``).
    ``dtmf_to_agent`` (``DTMF_TO_AGENT``): keys outside a keypad capture reach the agent.
    ``replacement``, if given, opens new agent sessions when one fails (issue 16); ``agent``
    may then be None (the first connect failed: the call starts by reconnecting).

    On a normal end ``call`` is finished with ``status=completed`` and the reason. Any task's
    failure cancels the others and propagates as an exception group (``call`` not finished).

    Cancellation: every child is cancelled and has exited before this returns or raises;
    ``call`` keeps whatever it had recorded.
    """
    if agent is None and replacement is None:
        raise ValueError("a call without an agent session needs a way to open one")
    uplink_send, uplink_receive = trio.open_memory_channel[UplinkItem](UPLINK_BUFFER)
    downlink_send, downlink_receive = trio.open_memory_channel[DownlinkItem](DOWNLINK_BUFFER)
    playback = Playback(gate_after_clear=agent.reports_turns if agent is not None else True)
    verification = CallerVerification()

    # The call keeps the first ends of both channels open while it runs: whatever happens to
    # the agent side, the Twilio reader meets a full uplink (a counted drop), never a closed one.
    with (
        uplink_receive,
        downlink_send,
        trio.move_on_after(limits.max_call_seconds) as call_deadline,
    ):
        async with trio.open_nursery() as nursery:
            control = CallControl(
                call,
                playback,
                downlink_send.clone(),
                nursery.cancel_scope,
                # Keypad captures start and stop on the uplink (``archer.call.keypad``).
                uplink=uplink_send.clone(),
            )
            tool_runner = ToolRunner(
                registry=tools,
                context=ToolContext(
                    call_sid=call.call_sid,
                    customer_id=call.customer_id,
                    verification=verification,
                    # Tools place marks on the downlink too, so they hold a clone of its end.
                    control=control,
                ),
                call=call,
                agent=agent,
                timeout=limits.tool_timeout,
                recorder=recorder,
            )
            if recorder is not None:
                call.on_turn_ended = recorder.turn_ended
                nursery.start_soon(recorder.run)
            # Tools outlive an agent session: one in flight when its session dies is finished
            # and recorded (issue 16).
            nursery.start_soon(tool_runner.run)
            # The Twilio side: the writer to Twilio, the stall watch and (in the body) the
            # reader. The agent side runs in a nursery of its own on clones of the channel ends,
            # so it can end without closing the channels the Twilio side holds.
            nursery.start_soon(play_to_caller, twilio, downlink_receive, call, playback)
            gap_uplink = uplink_send.clone()

            async def until_twilio_is_lost() -> None:
                # A Twilio stream that stops sending has lost its caller (issue 19).
                timeout = limits.twilio_media_timeout
                await fill_inbound_gaps(gap_uplink, call, media_timeout=timeout)
                call.finish("failed", "twilio_lost", f"no media from Twilio for {timeout:g} s")
                nursery.cancel_scope.cancel(reason="Twilio's stream was lost")

            nursery.start_soon(until_twilio_is_lost)

            def agent_hung_up() -> None:
                call.finish("completed", "agent_hangup")
                nursery.cancel_scope.cancel(reason="the agent hung up")

            nursery.start_soon(
                partial(
                    run_agent_sessions,
                    agent,
                    replacement,
                    AgentSideParts(
                        uplink=uplink_receive.clone(),
                        downlink=downlink_send.clone(),
                        call=call,
                        playback=playback,
                        transcoder=transcoder,
                        tools=tool_runner,
                        control=control,
                        ping_interval=limits.agent_ping_interval,
                        batch_frames=agent_batch_frames,
                        on_hangup=agent_hung_up,
                        dtmf_to_agent=dtmf_to_agent,
                    ),
                )
            )
            end_reason = await receive_from_twilio(twilio, uplink_send, call, playback)
            call.finish("completed", end_reason)
            nursery.cancel_scope.cancel(reason=f"the Twilio stream ended ({end_reason})")
    if call_deadline.cancelled_caught:
        log.warning("call.max_duration", seconds=limits.max_call_seconds)
        call.finish("completed", "max_duration")


async def bridge_call(
    call: CallState,
    twilio: TwilioStream,
    agents: AgentConnector,
    tools: ToolRegistry,
    *,
    limits: CallLimits,
    audio_format: str,
    resample_quality: str = "HQ",
    output_format: str | None = None,
    agent_batch_frames: int = 1,
    store: CallStore | None = None,
    dtmf_to_agent: bool = False,
    reconnect: ReconnectPolicy | None = None,
    facts: Mapping[str, SessionValue] | None = None,
) -> None:
    """Open the agent session and run the call; every failure is recorded on ``call``.

    ``store``, if given, receives the record while the call runs, not only at its end.
    ``facts``: an outbound call's purpose and payment facts, sent to every agent session of
    the call (the first and any that replaces it).
    ``reconnect``, if given with attempts, replaces a failed agent session (and retries a
    failed first connect) within its budget, then falls back to a person (issue 16).

    Never raises ``Exception``: the outcome is in ``call.status``/``end_reason``/``error`` and
    the traceback of anything unexpected is logged once, with the call's context.

    Cancellation: propagates (a hang-up seen by quart-trio, a server shutdown); ``call`` is
    left unfinished for the caller to decide why.
    """
    session = AgentSession(
        call_sid=call.call_sid,
        caller_number=_customer_number(call, outbound=bool(facts)),
        customer_id=call.customer_id,
        audio_format=audio_format,
        facts=dict(facts or {}),
    )
    replacement = None
    if reconnect is not None and reconnect.attempts > 0:
        replacement = AgentReplacement(
            agents=agents,
            # A replacing session may be told it resumes (off unless configured).
            session=attrs.evolve(session, extra_variables={**reconnect.resume_variables}),
            policy=reconnect,
        )
    connecting = trio.current_time()
    try:
        async with contextlib.AsyncExitStack() as first_session:
            agent: AgentStream | None = None
            try:
                agent = await first_session.enter_async_context(agents.open_session(session))
            except (AgentUnavailableError, BaseExceptionGroup) as exc:
                if replacement is None or not _only_retryable(exc):
                    raise
                call.agent_reconnect_failures += 1
                log.warning("agent.first_connect_failed", error=str(exc))
            if agent is not None:
                call.agent_call_id = agent.agent_call_id
                call.agent_call_ids.append(agent.agent_call_id)
                call.agent_setup_seconds = trio.current_time() - connecting
                log.info("agent.ready", agent_call_id=agent.agent_call_id)
            await run_call(
                call,
                twilio,
                agent,
                tools,
                limits=limits,
                transcoder=transcoder_for(
                    audio_format, quality=resample_quality, output_format=output_format
                ),
                agent_batch_frames=agent_batch_frames,
                recorder=CallRecorder(call, store) if store is not None else None,
                dtmf_to_agent=dtmf_to_agent,
                replacement=replacement,
            )
    # Handlers in order of precedence: the first one to finish the call names its end.
    except* AgentUnavailableError as group:
        _fail(call, leaves(group)[0].end_reason, group)
    except* AgentUnresponsiveError as group:
        _fail(call, "agent_unresponsive", group)
    except* AgentIdleError as group:
        _fail(call, "agent_idle_timeout", group)
    except* (AgentClosedError, AgentFatalError) as group:
        _fail(call, "agent_error", group)
    except* ProtocolError as group:
        _fail(call, "protocol_error", group)
    except* StoreError as group:
        _fail(call, "database_unavailable", group)
    except* Exception as group:
        log.error("call.crashed", exc_info=group)
        _fail(call, "internal_error", group)


def _customer_number(call: CallState, *, outbound: bool) -> str:
    """The number of the person the agent talks to: an inbound call's caller, or the customer
    an outbound call rang (its ``from`` is the bank's own ``OUTBOUND_FROM_NUMBER``)."""
    return (call.to_number if outbound else call.from_number) or ""


def _only_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception of its group) is a failure a new session may cure."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(is_retryable)[1] is None
    return is_retryable(exc)


def _fail(call: CallState, end_reason: str, group: BaseExceptionGroup[BaseException]) -> None:
    error = "; ".join(str(exc) for exc in leaves(group))
    if call.finish("failed", end_reason, error):
        log.warning("call.failed", end_reason=end_reason, error=error)
    else:
        # The call had already ended (say the caller hung up) when this arrived.
        log.info("call.error_after_end", end_reason=end_reason, error=error)


# The deadline must live inside the shield, so it is a parameter here (a caller wrapping this
# in its own scope would have to remember to shield it).
async def flush_call_record(
    store: CallStore,
    spool: RecordSpool,
    record: CallRecord,
    *,
    timeout: float,  # noqa: ASYNC109
) -> bool:
    """Write the call record even if the call was cancelled; True if the database took it.

    If the database fails or misses ``timeout``, the record goes to the spool (replayed
    later); if even the spool fails, the whole record is logged. Never raises ``Exception``.

    Cancellation: shielded, for at most ``timeout`` plus ``SPOOL_TIMEOUT`` seconds.
    """
    with trio.move_on_after(timeout, shield=True) as deadline:
        try:
            await store.save_call(record)
        except StoreError as exc:
            log.error("call.flush_failed", error=str(exc))
        else:
            return True
    if deadline.cancelled_caught:
        log.error("call.flush_timed_out", timeout=timeout)
    problem = f"no answer within {SPOOL_TIMEOUT:g} s"
    with trio.move_on_after(SPOOL_TIMEOUT, shield=True):
        try:
            await spool.append(record)
        except OSError as exc:
            problem = str(exc)
        else:
            log.warning("call.spooled")
            return False
    # The last resort: the whole record, in the log, so a person can restore it.
    log.critical("call.spool_failed", error=problem, record=_loggable(record))
    return False


def _loggable(record: CallRecord) -> dict[str, object]:
    """The record as a log field, with phone numbers masked."""
    fields = attrs.asdict(record)
    fields["from_number"] = mask_phone(record.from_number)
    fields["to_number"] = mask_phone(record.to_number)
    return fields
