"""The agent's half of a call, and the agent sessions that follow one another in it.

Layer: call. ``archer.call.session`` runs the whole call; this module is the part it starts
for the agent: ``run_agent_side`` (one session: the agent reader, the caller-audio forwarder and
the keepalive, in a nursery of their own on clones of the call's channel ends) and
``run_agent_sessions`` (the sessions one after another: when one fails in a way worth retrying,
the hold tone plays, caller audio is dropped and counted, and a new session takes over within
the reconnect budget; the budget spent, the caller goes to a person or hears an apology, see
``archer.call.reconnect``).

Rules: the Twilio side never waits on anything here; each session holds its own clones of the
channel ends, so one session's end never closes what the Twilio side holds; a tool outlives the
session that asked for it (its result goes to that session only).
"""

from __future__ import annotations

import contextlib
import random
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import attrs
import structlog
import trio

from archer.call.control import CallControl
from archer.call.events import TurnEnded, TurnStarted, TurnTextDelta
from archer.call.items import CLEAR_PLAYBACK, DownlinkItem, UplinkItem
from archer.call.playback import Playback
from archer.call.ports import AgentSession
from archer.call.pumps import (
    forward_to_agent,
    keep_agent_alive,
    receive_from_agent,
)
from archer.call.reconnect import (
    ReconnectPolicy,
    drop_caller_audio,
    fall_back,
    is_retryable,
    play_hold,
    stop_hold,
)
from archer.call.tools import ToolRunner
from archer.errors import (
    AgentUnavailableError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from archer.audio.transcoder import Transcoder
    from archer.call.events import AgentEvent
    from archer.call.ports import (
        AgentConnector,
        AgentStream,
    )
    from archer.call.state import CallState

log = structlog.get_logger(__name__)

_E = TypeVar("_E", bound=BaseException)


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
    dtmf_to_agent: bool = False,
) -> None:
    """The agent's half of one call, in a nursery of its own; returns when the agent hangs up.

    ``on_hangup`` runs the moment the agent hangs up, before this half is torn down (the call
    uses it to record the end before anything else can). ``dtmf_to_agent``: keys outside a
    keypad capture reach the agent (``DTMF_TO_AGENT``).

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
            partial(
                forward_to_agent,
                agent,
                uplink,
                transcoder,
                call,
                batch_frames=batch_frames,
                dtmf_to_agent=dtmf_to_agent,
            )
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
    dtmf_to_agent: bool = False

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
            dtmf_to_agent=self.dtmf_to_agent,
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
                error = "; ".join(str(exc) for exc in leaves(group))
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


def leaves(group: BaseExceptionGroup[_E]) -> list[_E]:
    """The exceptions of a (possibly nested) group, flattened."""
    found: list[_E] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc))
        else:
            found.append(exc)
    return found
