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
"""

from __future__ import annotations

import contextlib
import random
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

import attrs
import structlog
import trio

from archer.audio.transcoder import transcoder_for
from archer.call.control import CallControl
from archer.call.events import TurnEnded, TurnStarted, TurnTextDelta
from archer.call.items import CLEAR_PLAYBACK, DownlinkItem, UplinkItem
from archer.call.playback import Playback
from archer.call.ports import AgentSession
from archer.call.pumps import (
    DOWNLINK_BUFFER,
    UPLINK_BUFFER,
    fill_inbound_gaps,
    forward_to_agent,
    keep_agent_alive,
    play_to_caller,
    receive_from_agent,
    receive_from_twilio,
)
from archer.call.reconnect import (
    ReconnectPolicy,
    drop_caller_audio,
    fall_back,
    is_retryable,
    play_hold,
    stop_hold,
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
    from collections.abc import Callable

    from archer.audio.transcoder import Transcoder
    from archer.call.events import AgentEvent
    from archer.call.ports import (
        AgentConnector,
        AgentStream,
        CallStore,
        RecordSpool,
        TwilioStream,
    )
    from archer.call.records import CallRecord
    from archer.call.state import CallState
    from archer.call.tools import ToolRegistry
    from archer.settings import CallLimits

log = structlog.get_logger(__name__)

_E = TypeVar("_E", bound=BaseException)

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
    replacement: AgentReplacement | None = None,
) -> None:
    """Bridge one call until either side hangs up or the call reaches its maximum length.

    ``recorder``, if given, writes the record while the call runs (``archer.call.recorder``).
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
            control = CallControl(call, playback, downlink_send.clone(), nursery.cancel_scope)
            tool_runner = ToolRunner(
                registry=tools,
                context=ToolContext(
                    call_sid=call.call_sid,
                    customer_id=call.customer_id,
                    caller_number=call.from_number,
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
                    ),
                )
            )
            end_reason = await receive_from_twilio(twilio, uplink_send, call, playback)
            call.finish("completed", end_reason)
            nursery.cancel_scope.cancel(reason=f"the Twilio stream ended ({end_reason})")
    if call_deadline.cancelled_caught:
        log.warning("call.max_duration", seconds=limits.max_call_seconds)
        call.finish("completed", "max_duration")


async def run_agent_side(
    agent: AgentStream,
    uplink: trio.MemoryReceiveChannel[UplinkItem],
    downlink: trio.MemorySendChannel[DownlinkItem],
    call: CallState,
    playback: Playback,
    transcoder: Transcoder,
    tools: ToolRunner,
    *,
    ping_interval: float,
    batch_frames: int = 1,
    on_hangup: Callable[[], None] = lambda: None,
) -> None:
    """The agent's half of one call, in a nursery of its own; returns when the agent hangs up.

    ``on_hangup`` runs the moment the agent hangs up, before this half is torn down (the call
    uses it to record the end before anything else can).

    Three tasks: the agent reader (in the body), the caller-audio forwarder and the keepalive.
    They hold their own ends of the call's channels (``uplink`` and ``downlink`` are clones,
    closed when this returns), so when this half ends the Twilio half still has its channels:
    one agent session can give way to another without the caller's stream noticing. The tool
    supervisor is the call's (``tools.run``): a tool outlives the session that asked for it.

    Raises whatever an agent-side task raises (as an exception group), after cancelling the
    other two.

    Cancellation: every agent-side task is cancelled and has exited before this returns.
    """
    async with trio.open_nursery() as agent_side:
        agent_side.start_soon(
            partial(forward_to_agent, agent, uplink, transcoder, call, batch_frames=batch_frames)
        )
        agent_side.start_soon(keep_agent_alive, agent, ping_interval)
        await receive_from_agent(agent, downlink, call, playback, transcoder, tools)
        on_hangup()
        agent_side.cancel_scope.cancel(reason="the agent hung up")


@attrs.frozen(kw_only=True)
class AgentReplacement:
    """How a call opens a new agent session when its agent fails (issue 16)."""

    agents: AgentConnector
    session: AgentSession
    policy: ReconnectPolicy


@attrs.frozen(kw_only=True)
class AgentSideParts:
    """What every agent session of one call is run with (``run_agent_side``'s arguments)."""

    #: The call's own clones of the channel ends; each session gets clones of these.
    uplink: trio.MemoryReceiveChannel[UplinkItem]
    downlink: trio.MemorySendChannel[DownlinkItem]
    call: CallState
    playback: Playback
    transcoder: Transcoder
    tools: ToolRunner
    control: CallControl
    ping_interval: float
    batch_frames: int
    on_hangup: Callable[[], None]

    async def run_session(self, agent: AgentStream) -> None:
        await run_agent_side(
            agent,
            self.uplink.clone(),
            self.downlink.clone(),
            self.call,
            self.playback,
            self.transcoder,
            self.tools,
            ping_interval=self.ping_interval,
            batch_frames=self.batch_frames,
            on_hangup=self.on_hangup,
        )


@attrs.define
class _Outage:
    """One stretch without a working agent session, and the budget it has used."""

    started: float
    attempts_used: int = 0


async def run_agent_sessions(
    first: AgentStream | None,
    replacement: AgentReplacement | None,
    parts: AgentSideParts,
) -> None:
    """Run the call's agent sessions one after another until an agent hangs up (issue 16).

    Without ``replacement`` (or with a budget of 0 attempts) this is ``run_agent_side`` on
    ``first``. With it, a retryable failure (``archer.call.reconnect.is_retryable``) starts
    an outage: the hold tone plays at once and caller audio is dropped (both counted in
    ``call``), new sessions are tried within the outage's budget, and the first that opens
    takes over (its call id joins the record; its turns are numbered after the last one
    seen). The budget spent, ``fall_back`` apologises and transfers or hangs up.

    Raises a failure that is not retryable (as an exception group), as ``run_agent_side``.

    Cancellation: the current session's tasks and any reconnect attempt are cancelled; a
    session this opened is closed.
    """
    with parts.uplink, parts.downlink:
        if replacement is None or replacement.policy.attempts == 0:
            if first is None:  # run_call refuses this; kept for the type checker
                raise ValueError("no agent session and no way to open one")
            await parts.run_session(first)
            return
        await _run_with_replacement(first, replacement, parts)


async def _run_with_replacement(
    first: AgentStream | None, replacement: AgentReplacement, parts: AgentSideParts
) -> None:
    # The hold tone runs in a nursery of its own beside the sessions, so it starts the moment
    # one fails, before the dead one is closed.
    async with trio.open_nursery() as background:
        await _replace_until_done(first, replacement, parts, background)
        background.cancel_scope.cancel(reason="the agent side is over")


async def _replace_until_done(
    first: AgentStream | None,
    replacement: AgentReplacement,
    parts: AgentSideParts,
    background: trio.Nursery,
) -> None:
    call, playback, policy = parts.call, parts.playback, replacement.policy
    rng = random.Random()
    agent = first
    outage = None if first is not None else _Outage(trio.current_time())
    hold = trio.CancelScope()
    if agent is None:
        hold = await _start_hold(background, parts)
    while True:
        async with contextlib.AsyncExitStack() as sessions:
            if agent is None:
                assert outage is not None
                agent = await _open_replacement(sessions, replacement, outage, call, rng)
                hold.cancel()
                if agent is None:
                    log.error("agent.reconnect_gave_up", attempts=outage.attempts_used)
                    await fall_back(parts.downlink, playback, parts.tools, parts.control, policy)
                    return
                await stop_hold(parts.downlink, playback)
                playback.gate_after_clear = agent.reports_turns
                parts.tools.agent = agent
                log.info(
                    "agent.reconnected",
                    agent_call_id=agent.agent_call_id,
                    attempts=outage.attempts_used,
                )
                agent = _numbered_after(agent, call.last_turn)
            opened_at = trio.current_time()
            try:
                await parts.run_session(agent)
                return
            except BaseExceptionGroup as group:
                _, rest = group.split(is_retryable)
                if rest is not None:
                    raise
                error = "; ".join(str(exc) for exc in _leaves(group))
            # The dead session: nothing it sent more is played, and no result goes to it.
            parts.tools.agent = None
            playback.interrupt()
            parts.transcoder.interrupted()
            hold = await _start_hold(background, parts)
            now = trio.current_time()
            if outage is None or now - opened_at > policy.window:
                outage = _Outage(now)  # a session that lived its window earned a new budget
            log.warning(
                "agent.session_lost",
                error=error,
                attempts_left=policy.attempts - outage.attempts_used,
            )
            agent = None


async def _start_hold(background: trio.Nursery, parts: AgentSideParts) -> trio.CancelScope:
    """Start the hold tone and the caller-audio drain; cancel the scope returned to stop both."""

    scope = trio.CancelScope()

    async def hold() -> None:
        # A scope cancelled before this task enters it cancels at once: nothing plays.
        with scope:
            async with trio.open_nursery() as holding:
                holding.start_soon(play_hold, parts.downlink, parts.playback)
                holding.start_soon(drop_caller_audio, parts.uplink.clone(), parts.call)

    # First the clear (what Twilio still holds of a dead session), then the tone behind it.
    await parts.downlink.send(CLEAR_PLAYBACK)
    background.start_soon(hold)
    return scope


async def _open_replacement(
    sessions: contextlib.AsyncExitStack,
    replacement: AgentReplacement,
    outage: _Outage,
    call: CallState,
    rng: random.Random,
) -> AgentStream | None:
    """The next agent session, opened within what is left of ``outage``'s budget (None: spent).

    Cancellation: an attempt under way is abandoned; nothing is left open.
    """
    policy = replacement.policy
    while outage.attempts_used < policy.attempts:
        outage.attempts_used += 1
        delay = policy.delay(outage.attempts_used, rng)
        remaining = outage.started + policy.window - trio.current_time()
        if remaining <= delay:
            break
        await trio.sleep(delay)
        connecting = trio.current_time()
        # No deadline of ours around the connect: the session (and the nursery the adapter
        # opens) lives in ``sessions``, beyond any scope here. The connector's own
        # AGENT_READY_TIMEOUT bounds each attempt, so the window is overrun by one at most.
        try:
            agent = await sessions.enter_async_context(
                replacement.agents.open_session(replacement.session)
            )
        except (AgentUnavailableError, BaseExceptionGroup) as exc:
            if isinstance(exc, BaseExceptionGroup):
                _, rest = exc.split(is_retryable)
                if rest is not None:
                    raise
            call.agent_reconnect_failures += 1
            log.warning("agent.reconnect_failed", attempt=outage.attempts_used, error=str(exc))
            continue
        call.agent_reconnects += 1
        call.agent_call_id = agent.agent_call_id
        call.agent_call_ids.append(agent.agent_call_id)
        call.agent_setup_seconds = trio.current_time() - connecting
        return agent
    return None


def _numbered_after(agent: AgentStream, last_turn: int) -> AgentStream:
    """``agent`` with its turns numbered after ``last_turn`` (a new session counts from 1)."""
    return agent if last_turn == 0 else _RenumberedTurns(agent, last_turn)


@attrs.define
class _RenumberedTurns:
    """An agent session whose turn numbers continue the call's, not restart at 1."""

    _agent: AgentStream
    _offset: int

    @property
    def agent_call_id(self) -> str:
        return self._agent.agent_call_id

    @property
    def reports_turns(self) -> bool:
        return self._agent.reports_turns

    async def receive(self) -> AgentEvent:
        event = await self._agent.receive()
        if isinstance(event, TurnStarted | TurnTextDelta | TurnEnded):
            return attrs.evolve(event, turn=event.turn + self._offset)
        return event

    async def send_audio(self, payload: str) -> None:
        await self._agent.send_audio(payload)

    async def send_dtmf(self, digit: str) -> None:
        await self._agent.send_dtmf(digit)

    async def send_tool_result(self, tool_call_id: str, result: str, *, is_error: bool) -> None:
        await self._agent.send_tool_result(tool_call_id, result, is_error=is_error)

    async def ping(self) -> None:
        await self._agent.ping()


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
    reconnect: ReconnectPolicy | None = None,
) -> None:
    """Open the agent session and run the call; every failure is recorded on ``call``.

    ``store``, if given, receives the record while the call runs, not only at its end.
    ``reconnect``, if given with attempts, replaces a failed agent session (and retries a
    failed first connect) within its budget, then falls back to a person (issue 16).

    Never raises ``Exception``: the outcome is in ``call.status``/``end_reason``/``error`` and
    the traceback of anything unexpected is logged once, with the call's context.

    Cancellation: propagates (a hang-up seen by quart-trio, a server shutdown); ``call`` is
    left unfinished for the caller to decide why.
    """
    session = AgentSession(
        call_sid=call.call_sid,
        caller_number=call.from_number or "",
        customer_id=call.customer_id,
        audio_format=audio_format,
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
                replacement=replacement,
            )
    # Handlers in order of precedence: the first one to finish the call names its end.
    except* AgentUnavailableError as group:
        _fail(call, _leaves(group)[0].end_reason, group)
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


def _only_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception of its group) is a failure a new session may cure."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(is_retryable)[1] is None
    return is_retryable(exc)


def _leaves(group: BaseExceptionGroup[_E]) -> list[_E]:
    """The exceptions of a (possibly nested) group, flattened."""
    leaves: list[_E] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaves(exc))
        else:
            leaves.append(exc)
    return leaves


def _fail(call: CallState, end_reason: str, group: BaseExceptionGroup[BaseException]) -> None:
    error = "; ".join(str(exc) for exc in _leaves(group))
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
