"""Tool supervision: one task per tool call, bounded, timed, and never fatal to the call.

Layer: call. Tools are plain async functions registered in a ``ToolRegistry``; this module runs
them for the agent and writes every invocation into the call state.

Rules: a tool that raises, refuses (``ToolError``) or overruns its timeout becomes an
``is_error`` result and the call goes on; only a failure of the machinery itself (the agent
socket dying while the result is sent) propagates and ends the call. Results are capped at
4096 bytes, Cartesia's limit. Secrets are masked by name and by value before anything is recorded
or answered: the value of a secret-named argument (``pin``) is cut out of every argument, result
and error text of the call, whatever field or type it arrived in, so a PIN the agent echoes in a
``note`` or as a number never reaches the database, the spool or a log line. A ``tool_call_id``
seen before in the call is refused as a duplicate and never runs, so the first invocation's
audit row cannot be overwritten. At most ``MAX_CONCURRENT_TOOLS`` run at once; a request
beyond the queue is answered at once with an ``is_error`` "busy" result so the agent's reader
never waits on a tool.

Size (over 400 lines, on purpose): the runner, the registry and the result types share the
rules above (masking, the size cap, the audit before a side effect, the duplicate-id refusal,
a tool cut off by the call's end); each piece is small and they are read together.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs
import structlog
import trio
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from archer.call.events import ToolCallRequest
from archer.call.masking import (
    MIN_SECRET_VALUE_CHARS,
    SECRET_ARGUMENT_NAMES,
    collect_secrets,
    mask_value,
    scrub,
)
from archer.call.state import utc_now
from archer.errors import ToolError

if TYPE_CHECKING:
    from archer.call.control import CallControl
    from archer.call.ports import AgentStream
    from archer.call.recorder import CallRecorder
    from archer.call.state import CallState

log = structlog.get_logger(__name__)

#: Cartesia replaces any result larger than this with an error, so Archer never sends one.
MAX_RESULT_BYTES: Final = 4096
#: Tools running at once per call; each may hold a database connection.
MAX_CONCURRENT_TOOLS: Final = 4
#: Requests waiting for a free slot; past this the agent hears "busy" rather than waiting.
TOOL_QUEUE_SIZE: Final = 4
_CUT_MARKER: Final = " [cut off: result too large]"
#: The answer to a ``tool_call_id`` already used in this call.
DUPLICATE_ID: Final = (
    "duplicate tool_call_id: a call with this id was already received in this call; "
    "it was not run again. Use a new id for a new call."
)
#: Why a side-effecting tool refused to act: the bank's audit row could not be written first.
_NOT_AUDITED: Final = "the record of it could not be written, so nothing was changed; try again"


@attrs.define
class CallerVerification:
    """Whether the caller proved who they are in this call; never stored, never carried over."""

    #: Failed attempts after which verification is locked for the rest of the call.
    MAX_FAILURES: ClassVar[int] = 3

    verified: bool = False
    failures: int = 0

    @property
    def locked(self) -> bool:
        return not self.verified and self.failures >= self.MAX_FAILURES


@attrs.frozen(kw_only=True)
class ToolContext:
    """What a tool may know about, and do to, the call it serves."""

    call_sid: str
    customer_id: int | None
    verification: CallerVerification
    control: CallControl


@attrs.frozen
class ToolResult:
    """A tool's answer: a JSON object (or plain text) and whether it is an error."""

    content: Mapping[str, object] | str
    is_error: bool = False
    #: How the invocation ended, for the record (``tool_calls.outcome``); never sent to the agent.
    outcome: str | None = None
    #: False when the tool knows the agent session that asked is gone (a keypad entry whose
    #: forwarder ended with its session): recorded, never sent, so nothing is written to a dead
    #: socket before the session's replacement is noticed.
    to_agent: bool = True

    def text(self) -> str:
        """The ``result`` string sent to the agent, at most ``MAX_RESULT_BYTES`` bytes."""
        raw = (
            self.content
            if isinstance(self.content, str)
            else json.dumps(self.content, separators=(",", ":"), default=str)
        )
        return cap_result(raw)


ToolFunction = Callable[[ToolContext, Mapping[str, object]], Awaitable[ToolResult]]


@attrs.frozen
class Tool:
    """A tool the agent may call, by name."""

    name: str
    run: ToolFunction
    #: Overrides the call-wide tool timeout (seconds) when set.
    timeout: float | None = None
    #: Argument names to mask, on top of ``SECRET_ARGUMENT_NAMES``.
    secret_arguments: frozenset[str] = frozenset()
    #: JSON Schema of the arguments (the ``parameters`` the agent was given), if any.
    parameters: Mapping[str, Any] | None = None
    #: It changes something outside the call (a card, the phone call): its audit row is written
    #: before it acts, and it does not act if that write fails (``archer.call.recorder``).
    side_effect: bool = False
    #: When set, an invocation cancelled with the call (a hang-up, the call failing) is not left
    #: started-but-unfinished: its row is finished, ``is_error``, with the outcome this returns
    #: for the call's end reason so far (None before one is named) and whether a task of the
    #: call failed (trio cancelled the call's nursery for it).
    cancelled_outcome: Callable[[str | None, bool], str] | None = None
    _validator: Draft202012Validator | None = attrs.field(init=False, repr=False, eq=False)

    @_validator.default
    def _build_validator(self) -> Draft202012Validator | None:
        if self.parameters is None:
            return None
        Draft202012Validator.check_schema(self.parameters)
        return Draft202012Validator(self.parameters)

    def argument_problem(self, arguments: Mapping[str, object]) -> str | None:
        """Why ``arguments`` do not fit the tool's schema, or None if they do."""
        if self._validator is None:
            return None
        error = best_match(self._validator.iter_errors(dict(arguments)))
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message


@attrs.frozen
class ToolRegistry:
    """The tools of one deployment, looked up by name."""

    tools: Mapping[str, Tool] = attrs.field(factory=dict)

    @classmethod
    def of(cls, *tools: Tool) -> ToolRegistry:
        return cls({tool.name: tool for tool in tools})

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def masked(
        self, name: str, arguments: Mapping[str, object], secrets: frozenset[str] = frozenset()
    ) -> dict[str, object]:
        """``arguments`` with every secret replaced, safe to store and log.

        Secret-named values are masked whatever they hold, at any depth; ``secrets`` (and the
        values of this call's own secret-named arguments) are cut out of every other string,
        and a number equal to one of them is masked too.
        """
        found = secrets | self.secret_values(name, arguments)
        masked = mask_value(dict(arguments), self._secret_names(name), found)
        assert isinstance(masked, dict)
        return masked

    def secret_values(self, name: str, arguments: Mapping[str, object]) -> frozenset[str]:
        """The texts of every secret-named argument's value (at any depth), in each form the
        value could be echoed in: as sent, stripped, and as a number's text."""
        values: set[str] = set()
        collect_secrets(dict(arguments), self._secret_names(name), values, under_secret=False)
        return frozenset(value for value in values if len(value) >= MIN_SECRET_VALUE_CHARS)

    def _secret_names(self, name: str) -> frozenset[str]:
        tool = self.tools.get(name)
        extra = tool.secret_arguments if tool is not None else frozenset()
        return SECRET_ARGUMENT_NAMES | frozenset(key.lower() for key in extra)


def cap_result(text: str) -> str:
    """Cut ``text`` to at most ``MAX_RESULT_BYTES`` UTF-8 bytes, saying that it was cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_RESULT_BYTES:
        return text
    room = MAX_RESULT_BYTES - len(_CUT_MARKER.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + _CUT_MARKER


@attrs.frozen
class _Submitted:
    request: ToolCallRequest
    playback_epoch: int
    #: The agent session that asked: its result goes to it alone (issue 16).
    agent: AgentStream | None


@attrs.define
class ToolRunner:
    """Runs the agent's tool calls for one call.

    ``submit`` never waits for a tool or for a free slot: a request beyond the queue is answered
    "busy" at once. It does wait for the agent's socket when it answers a request itself (busy,
    or a duplicate id), as any send to the agent does.
    """

    registry: ToolRegistry
    context: ToolContext
    call: CallState
    #: The agent session now serving the call (None while it is being replaced; issue 16).
    #: A result is sent only to the session that asked for it, never to its successor.
    agent: AgentStream | None
    timeout: float
    #: Writes the record while the call runs; side-effecting tools need it before they act.
    recorder: CallRecorder | None = None
    _requests_in: trio.MemorySendChannel[_Submitted] = attrs.field(init=False)
    _requests_out: trio.MemoryReceiveChannel[_Submitted] = attrs.field(init=False)
    #: Every ``tool_call_id`` submitted in this call (a repeat is refused, never run).
    _seen_ids: set[str] = attrs.field(init=False, factory=set)
    #: The secret values (PINs) the agent has sent in this call, masked wherever they show.
    _secrets: frozenset[str] = attrs.field(init=False, default=frozenset())

    def __attrs_post_init__(self) -> None:
        self._requests_in, self._requests_out = trio.open_memory_channel[_Submitted](
            TOOL_QUEUE_SIZE
        )

    async def submit(self, request: ToolCallRequest, *, playback_epoch: int) -> None:
        """Hand a request to the supervisor, or answer "busy" at once if the queue is full.

        Waits only to send the agent an answer it gives itself (busy, duplicate id).

        ``playback_epoch`` is the epoch of agent speech the request arrived in, so a tool that
        waits for its lead-in knows whether the caller has cut in since.

        Cancellation: a request already queued still runs (until the call's nursery ends); a busy
        or duplicate answer may be left unsent, its invocation recorded as started.
        """
        if request.tool_call_id in self._seen_ids:
            # Executing it again would run a side effect twice and overwrite the first audit
            # row; the agent is told, and the first invocation's record stays as it was.
            log.warning("tool.duplicate_id", tool=request.name, tool_call_id=request.tool_call_id)
            if request.expects_response and self.agent is not None:
                await self.agent.send_tool_result(request.tool_call_id, DUPLICATE_ID, is_error=True)
            return
        self._seen_ids.add(request.tool_call_id)
        # Remembered for the rest of the call: a PIN given once is cut out of every later
        # argument and result too.
        self._secrets |= self.registry.secret_values(request.name, request.arguments)
        try:
            self._requests_in.send_nowait(_Submitted(request, playback_epoch, self.agent))
        except trio.WouldBlock:
            log.warning("tool.busy", tool=request.name, tool_call_id=request.tool_call_id)
            self.call.tool_started(
                request.tool_call_id,
                request.name,
                self.registry.masked(request.name, request.arguments, self._secrets),
                now=utc_now(),
            )
            await self._answer(
                request, ToolResult("too many tool calls at once; try again", True), self.agent
            )

    async def run(self) -> None:
        """Supervise tool tasks until the call ends; it never returns on its own.

        The request channel's sending end lives as long as this runner (``submit`` is called
        until the call's nursery is cancelled), so the loop ends only by cancellation.

        Cancellation: running tools are cancelled with the call; their invocations stay in the
        call state as started but unfinished, unless the tool says how such an end is recorded
        (``Tool.cancelled_outcome``: ``collect_pin``).
        """
        slots = trio.Semaphore(MAX_CONCURRENT_TOOLS)
        async with trio.open_nursery() as nursery, self._requests_out:
            while True:
                # Take a slot before a request, so none waits in hand beyond the queue's bound.
                await slots.acquire()
                submitted = await self._requests_out.receive()
                nursery.start_soon(self._run_one, submitted, slots)

    async def _run_one(self, submitted: _Submitted, slots: trio.Semaphore) -> None:
        try:
            await self._invoke_and_answer(
                submitted.request, submitted.playback_epoch, submitted.agent
            )
        finally:
            slots.release()

    async def run_for_archer(
        self,
        request: ToolCallRequest,
        *,
        playback_epoch: int,
        end_reasons: Mapping[str, str],
    ) -> None:
        """Run a tool Archer itself needs (the fall-back transfer), here and now.

        Recorded like any tool call; its result goes to no agent. ``end_reasons`` renames the
        end the tool records (``archer.call.control.CallControl.renaming``).

        Cancellation: as for any tool: the invocation stays recorded as started.
        """
        self._seen_ids.add(request.tool_call_id)
        await self._invoke_and_answer(request, playback_epoch, None, end_reasons=end_reasons)

    async def _invoke_and_answer(
        self,
        request: ToolCallRequest,
        playback_epoch: int,
        agent: AgentStream | None,
        *,
        end_reasons: Mapping[str, str] | None = None,
    ) -> None:
        tool = self.registry.get(request.name)
        self.call.tool_started(
            request.tool_call_id,
            request.name,
            self.registry.masked(request.name, request.arguments, self._secrets),
            now=utc_now(),
        )
        problem = tool.argument_problem(request.arguments) if tool is not None else None
        if tool is None:
            result = ToolResult(f"unknown tool {request.name!r}", is_error=True)
        elif problem is not None:
            result = ToolResult(f"invalid arguments for {tool.name}: {problem}", is_error=True)
        elif tool.side_effect and not await self._audited_before_acting():
            result = ToolResult(f"{tool.name} was not done: {_NOT_AUDITED}", is_error=True)
        else:
            timeout = tool.timeout if tool.timeout is not None else self.timeout
            control = self.context.control.for_request(playback_epoch)
            if end_reasons:
                control = control.renaming(end_reasons)
            context = attrs.evolve(self.context, control=control)
            with trio.move_on_after(timeout) as deadline:
                try:
                    result = await self._invoke(tool, context, request)
                except trio.Cancelled as cancelled:
                    # The call's end, unless the tool's own deadline passed (then the timeout
                    # result below finishes the row): finish it now, no agent will hear one.
                    if tool.cancelled_outcome is not None and not deadline.cancel_called:
                        failed = getattr(cancelled, "source", None) == "nursery"
                        self._finish_cancelled(request, tool.cancelled_outcome, failed=failed)
                    raise
            if deadline.cancelled_caught:
                log.warning("tool.timed_out", tool=tool.name, timeout=timeout)
                result = ToolResult(f"{tool.name} timed out after {timeout:g} s", is_error=True)
        await self._answer(request, result, agent)
        if tool is not None and tool.side_effect and self.recorder is not None:
            await self.recorder.write_now()  # the audit row completed (or the flush does it)

    def _finish_cancelled(
        self,
        request: ToolCallRequest,
        outcome: Callable[[str | None, bool], str],
        *,
        failed: bool,
    ) -> None:
        end_reason = self.call.end_reason
        ending = end_reason or ("a failure" if failed else "the call ending")
        self.call.tool_finished(
            request.tool_call_id,
            f"{request.name} was cut off by {ending}; no result",
            is_error=True,
            now=utc_now(),
            outcome=outcome(end_reason, failed),
        )
        log.info("tool.ended_with_the_call", tool=request.name, end_reason=end_reason)

    async def _audited_before_acting(self) -> bool:
        """Write the started tool call's row; False if the database did not take it."""
        return self.recorder is None or await self.recorder.write_now()

    async def _invoke(
        self, tool: Tool, context: ToolContext, request: ToolCallRequest
    ) -> ToolResult:
        try:
            return await tool.run(context, request.arguments)
        except ToolError as refusal:
            return ToolResult(str(refusal), is_error=True, outcome=refusal.outcome)
        except Exception:
            # A bug in one tool must not end the call: the agent hears a generic failure and
            # the traceback goes to the log once, with the call's context bound (and any PIN
            # its message echoed cut out).
            log.error(
                "tool.crashed",
                tool=tool.name,
                exception=scrub(traceback.format_exc(), self._secrets),
            )
            return ToolResult(f"{tool.name} failed", is_error=True)

    async def _answer(
        self, request: ToolCallRequest, result: ToolResult, agent: AgentStream | None
    ) -> None:
        text = result.text()
        # The agent gets the result as is (it sent the PIN itself); the record never holds it,
        # not even echoed by a validation error.
        self.call.tool_finished(
            request.tool_call_id,
            scrub(text, self._secrets),
            is_error=result.is_error,
            now=utc_now(),
            outcome=result.outcome,
        )
        log.info(
            "tool.finished", tool=request.name, is_error=result.is_error, outcome=result.outcome
        )
        if not result.to_agent:
            log.warning("tool.result_not_sent", tool=request.name, reason="asking session gone")
            return
        if not request.expects_response or agent is None:
            return
        if agent is not self.agent:
            # The session that asked has died and another took over (issue 16): it never
            # asked, so it is not told; the record keeps the result.
            log.warning("tool.result_not_sent", tool=request.name, reason="agent replaced")
            return
        await agent.send_tool_result(request.tool_call_id, text, is_error=result.is_error)
