"""Keypad capture: digits the caller keys for a secret (a PIN), kept from the agent.

Layer: call. A tool (``collect_pin`` in ``archer.bank.tools``) opens a capture through its
``CallControl`` and reads one entry with ``read_entry``; it never sees a channel end of the call.

Rules:
- The capture's state (whether one runs, where its digits go) has one owner: the caller → agent
  forwarder (``archer.call.pumps.forward_to_agent``). A tool asks for a capture by sending
  ``StartCapture`` on the uplink and ends it with ``StopCapture``; the forwarder answers
  ``CAPTURE_ACCEPTED`` (or ``CAPTURE_BUSY`` while another capture runs) on the capture's own
  digit channel, then sends it every key the caller presses until the capture stops.
- While a capture runs, no key and no caller audio reaches the agent: each caller frame is
  replaced by as much silence (counted in ``CallState.frames_silenced_for_pin``), so a PIN
  spoken aloud does not leak either.
- Because start and stop travel on the uplink, they are ordered with the caller's frames and
  keys: every key Twilio delivers after the tool call arrived counts, including keys pressed
  while the agent's lead-in ("please key your PIN, then hash") still plays. Keys delivered
  *before* the tool call do not count: they were handled under the normal rules (forwarded with
  ``DTMF_TO_AGENT``, otherwise dropped and counted) and so may already be known to the agent,
  and Archer cannot tell a PIN typed ahead from a menu choice.
- An entry ends at ``#``, at ``max_digits``, ``digit_timeout`` after the last key, or at
  ``entry_timeout``; ``*`` starts it over. A barge-in (the agent cleared its speech since the
  request) ends it as ``interrupted``, seen within ``INTERRUPT_POLL`` seconds.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final, Literal

import attrs
import trio

from archer.call.items import CAPTURE_BUSY, StartCapture, StopCapture

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from archer.call.items import UplinkItem

#: Keys waiting for the tool that reads the entry: a PIN is at most 8 keys plus ``*``/``#``; a
#: caller mashing more than this between two reads loses the excess (counted as dropped).
CAPTURE_BUFFER: Final = 32
#: How often a waiting entry looks whether the agent was interrupted (a barge-in).
INTERRUPT_POLL: Final = 0.1
#: Stopping a capture waits at most this long for room on the uplink (shielded).
STOP_TIMEOUT: Final = 1.0

EntryOutcome = Literal["entered", "timed_out", "interrupted", "busy", "ended"]


@attrs.frozen(kw_only=True)
class EntryRules:
    """When a keypad entry is over (``PIN_MAX_DIGITS``, ``PIN_DIGIT_TIMEOUT``,
    ``PIN_ENTRY_TIMEOUT``)."""

    max_digits: int = 8
    #: Seconds after a key with no further key: the entry is submitted as keyed.
    digit_timeout: float = 5.0
    #: Seconds from the start of the capture to the end of the entry, whatever happens.
    entry_timeout: float = 30.0


@attrs.frozen(slots=True)
class KeypadEntry:
    """How an entry ended and, only when ``entered``, what was keyed (a secret: never log it)."""

    outcome: EntryOutcome
    digits: str = attrs.field(default="", repr=False)


@contextlib.asynccontextmanager
async def open_capture(
    uplink: trio.MemorySendChannel[UplinkItem],
) -> AsyncIterator[trio.MemoryReceiveChannel[str] | None]:
    """Capture the caller's keys while the block runs; yields their channel, or None if another
    capture is running (nothing was captured then).

    Cancellation: the capture is stopped (shielded, for at most ``STOP_TIMEOUT``) so
    forwarding resumes; if the call is ending anyway the stop is skipped.
    """
    send, receive = trio.open_memory_channel[str](CAPTURE_BUFFER)
    await uplink.send(StartCapture(send))
    try:
        with receive:
            answer = await receive.receive()
            yield None if answer == CAPTURE_BUSY else receive
    finally:
        # If the forwarder is gone, the call (or its agent side) is over: nothing to resume.
        with (
            trio.move_on_after(STOP_TIMEOUT, shield=True),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await uplink.send(StopCapture(send))


async def read_entry(
    digits: trio.MemoryReceiveChannel[str],
    rules: EntryRules,
    interrupted: Callable[[], bool],
) -> KeypadEntry:
    """Read one entry from a capture's ``digits`` under ``rules``.

    ``interrupted()`` says whether the agent was cut off since the request; the entry then ends
    as ``interrupted`` without its digits.

    Cancellation: returns nothing; keys already captured are dropped with the capture.
    """
    keyed: list[str] = []
    entry_deadline = trio.current_time() + rules.entry_timeout
    last_key_at: float | None = None
    while True:
        if interrupted():
            return KeypadEntry("interrupted")
        now = trio.current_time()
        deadline = entry_deadline
        if last_key_at is not None:
            deadline = min(deadline, last_key_at + rules.digit_timeout)
        if now >= deadline:
            if keyed and deadline < entry_deadline:
                return KeypadEntry("entered", "".join(keyed))
            return KeypadEntry("timed_out")
        with trio.move_on_at(min(deadline, now + INTERRUPT_POLL)):
            try:
                key = await digits.receive()
            except trio.EndOfChannel:
                return KeypadEntry("ended")
            last_key_at = trio.current_time()
            if key == "#":
                return KeypadEntry("entered", "".join(keyed))
            if key == "*":
                keyed.clear()
                continue
            keyed.append(key)
            if len(keyed) >= rules.max_digits:
                return KeypadEntry("entered", "".join(keyed))
