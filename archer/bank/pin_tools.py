"""The PIN tools: ``verify_caller`` (a spoken PIN) and ``collect_pin`` (keyed, withheld).

Layer: domain (bank), beside ``archer.bank.tools``, which registers these with the others.

Rules: one mechanism checks every PIN (``_check_pin``: the call's three attempts, then the
customer's lock-out across calls and instances through ``PinVerifier``); the agent hears only
the outcome, never a digit or how many were keyed. ``collect_pin`` reads the keys Archer
withholds from the agent (``archer.call.keypad``) and, when the call is recorded, pauses the
recording first and refuses if it cannot: a PIN is never keyed onto a recording.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Final

import structlog
import trio

from archer.call.keypad import EntryRules, read_entry
from archer.call.state import STREAM_END_REASONS, utc_now
from archer.call.tools import ToolContext, ToolFunction, ToolResult
from archer.errors import TelephonyError, ToolError

if TYPE_CHECKING:
    from archer.bank.verification import PinVerifier
    from archer.call.control import CallControl
    from archer.call.ports import TelephonyControl
    from archer.call.records import RecordingAction

log = structlog.get_logger(__name__)

LOCKED: Final = (
    "Verification is locked for this call after three failed attempts. "
    "Offer to transfer the caller to a colleague."
)
LOCKED_OUT: Final = (
    "Verification is locked for this customer after too many failed attempts across calls; "
    "no PIN can be checked now, not even the right one. Tell the caller to try again later, "
    "or offer to transfer them to a colleague."
)
#: What a keypad PIN check may take after the entry ends (PBKDF2 in a thread, the failure row).
PIN_CHECK_TIMEOUT: Final = 10.0
KEYPAD_ONLY: Final = (
    "PINs are taken on the keypad on this line: call collect_pin (and ask the caller to key "
    "their PIN, then hash). Never ask for a PIN aloud."
)
KEYPAD_OFF: Final = "Keypad PIN entry is not enabled on this line; use verify_caller."
CAPTURE_BUSY_TEXT: Final = "A PIN entry is already running in this call; wait for its result."
ENTRY_TIMED_OUT: Final = (
    "No PIN was entered in time; nothing was checked. Ask whether they want to try again."
)
ENTRY_INTERRUPTED: Final = (
    "The PIN entry was interrupted; nothing was checked. Ask the caller to key it again."
)
ENTRY_INVALID: Final = (
    "What was keyed is not a PIN (4 to 8 digits); nothing was checked. Ask the caller to key "
    "their PIN again, then hash."
)
ENTRY_ENDED: Final = "The PIN entry ended with the call's audio; nothing was checked."
RECORDING_NOT_PAUSED: Final = (
    "The PIN cannot be taken safely now: the call's recording could not be paused, and a PIN "
    "is never keyed onto a recording. Nothing was collected; offer to try again later or to "
    "transfer the caller to a colleague."
)
#: Resuming the recording after an entry, even a cancelled one (shielded), at most this long.
RESUME_TIMEOUT: Final = 10.0


def verify_caller_tool(verifier: PinVerifier, *, allowed: bool = True) -> ToolFunction:
    async def verify_caller(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        if not allowed:
            raise ToolError(KEYPAD_ONLY)
        pin = str(arguments["pin"]).strip()
        settled = context.verification.verified or context.verification.locked
        if not settled and not (pin.isdigit() and 4 <= len(pin) <= 8):
            raise ToolError("The PIN must be 4 to 8 digits; ask the caller to repeat it.")
        return await _check_pin(verifier, context, pin)

    return verify_caller


def collect_pin_tool(
    verifier: PinVerifier,
    rules: EntryRules,
    *,
    allowed: bool,
    telephony: TelephonyControl,
    recording_pause: str | None,
) -> ToolFunction:
    async def collect_pin(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        if not allowed:
            raise ToolError(KEYPAD_OFF, outcome="refused_setting")
        verification = context.verification
        if verification.verified:
            return ToolResult({"verified": True}, outcome="verified")
        if verification.locked:
            raise ToolError(LOCKED, outcome="locked")
        async with context.control.keypad_capture() as digits:
            if digits is None:
                raise ToolError(CAPTURE_BUSY_TEXT, outcome="refused_busy")
            # Keys are withheld (and buffered) from here; none is read before the pause lands.
            if recording_pause is None:
                return await _read_and_check(verifier, rules, context, digits)
            return await _paused_for(
                telephony,
                context.control,
                recording_pause,
                context.call_sid,
                partial(_read_and_check, verifier, rules, context, digits),
            )

    return collect_pin


#: End reasons of a call whose agent side failed (``collect_pin`` cancelled with it).
_AGENT_END_REASONS: Final = frozenset(
    {
        "agent_hangup",
        "agent_ended",
        "agent_error",
        "agent_unresponsive",
        "agent_idle_timeout",
        "agent_lost",
        "agent_lost_transferred",
    }
)


def capture_cancelled_outcome(end_reason: str | None, failed: bool) -> str:
    """``collect_pin``'s outcome when the call's end cancels it mid-entry (``Tool.
    cancelled_outcome``): ``hang_up`` if the caller's stream ended, ``agent_failed`` if the
    agent's side ended the call, ``call_failed`` if a task of the call ``failed`` (its end
    reason is named only after every task has stopped), else ``call_ended`` (its maximum
    length, a shutdown)."""
    if end_reason in STREAM_END_REASONS:
        return "hang_up"
    if end_reason in _AGENT_END_REASONS:
        return "agent_failed"
    return "call_failed" if end_reason is None and failed else "call_ended"


async def _paused_for(
    telephony: TelephonyControl,
    control: CallControl,
    pause_behavior: str,
    call_sid: str,
    entry: Callable[[], Awaitable[ToolResult]],
) -> ToolResult:
    """Run ``entry`` with the call's recording paused; refuse (never run it) if it cannot be.

    The pause and the resume, each with its times and Twilio's answer, go into the call's
    record (``recording_events``).

    Cancellation: the recording is resumed (shielded, at most ``RESUME_TIMEOUT``).
    """
    change = partial(_change_recording, telephony, control, call_sid, pause_behavior)
    try:
        await change("pause")
    except TelephonyError as exc:
        # Nothing read: no PIN onto a recording.
        raise ToolError(RECORDING_NOT_PAUSED, outcome="refused_recording") from exc
    try:
        return await entry()
    finally:
        # A failed resume is recorded and logged; the entry's result stands.
        with trio.move_on_after(RESUME_TIMEOUT, shield=True), suppress(TelephonyError):
            await change("resume")


async def _change_recording(
    telephony: TelephonyControl,
    control: CallControl,
    call_sid: str,
    pause_behavior: str,
    action: RecordingAction,
) -> None:
    """Pause or resume the call's recording, and record the request with Twilio's answer.

    Raises:
        TelephonyError: Twilio refused or could not be reached (recorded, logged).
    """
    requested_at = utc_now()
    try:
        recording_sid = await telephony.set_recording(
            call_sid, paused=action == "pause", pause_behavior=pause_behavior
        )
    except TelephonyError as exc:
        control.recording_changed(
            action,
            requested_at=requested_at,
            answered_at=utc_now(),
            accepted=False,
            error_code=exc.code,
        )
        log.error(f"bank.recording_{action}_failed", error=str(exc))
        raise
    control.recording_changed(
        action,
        requested_at=requested_at,
        answered_at=utc_now(),
        accepted=True,
        recording_sid=recording_sid,
    )
    log.info(f"bank.recording_{action}d", at=requested_at.isoformat())


async def _read_and_check(
    verifier: PinVerifier,
    rules: EntryRules,
    context: ToolContext,
    digits: trio.MemoryReceiveChannel[str],
) -> ToolResult:
    """Read one keypad entry from the running capture, then check it."""
    entry = await read_entry(digits, rules, context.control.interrupted)
    log.info("bank.pin_entry", outcome=entry.outcome)  # the outcome only, never digits
    if entry.outcome == "timed_out":
        raise ToolError(ENTRY_TIMED_OUT, outcome="timed_out")
    if entry.outcome == "interrupted":
        raise ToolError(ENTRY_INTERRUPTED, outcome="barge_in")
    if entry.outcome != "entered":
        # The capture's keys stopped coming: the forwarder of the agent session that asked has
        # gone with its session (issue 16: another may take over). Nobody is left to answer.
        return ToolResult(ENTRY_ENDED, is_error=True, outcome="agent_failed", to_agent=False)
    if not (entry.digits.isdigit() and 4 <= len(entry.digits) <= 8):
        raise ToolError(ENTRY_INVALID, outcome="invalid")
    # Checked while still capturing: a key pressed during the check stays withheld.
    return await _check_pin(verifier, context, entry.digits)


async def _check_pin(verifier: PinVerifier, context: ToolContext, pin: str) -> ToolResult:
    """Check ``pin`` for the caller: one mechanism for ``verify_caller`` and ``collect_pin``
    (the call's three attempts, the customer's lock-out across calls)."""
    verification = context.verification
    if verification.verified:
        return ToolResult({"verified": True}, outcome="verified")
    if verification.locked:
        raise ToolError(LOCKED, outcome="locked")
    check = await verifier.check(context.customer_id, context.call_sid, pin)
    if check.locked_out:
        raise ToolError(LOCKED_OUT, outcome="locked_out")
    if check.verified:
        verification.verified = True
        log.info("bank.caller_verified")
        return ToolResult({"verified": True}, outcome="verified")
    verification.failures += 1
    attempts_left = max(0, verification.MAX_FAILURES - verification.failures)
    if check.attempts_left is not None:
        attempts_left = min(attempts_left, check.attempts_left)
    log.warning("bank.verification_failed", attempts_left=attempts_left)
    if verification.locked:
        raise ToolError(LOCKED, outcome="locked")
    return ToolResult({"verified": False, "attempts_left": attempts_left}, outcome="wrong_pin")
