"""How an emulated Twilio call ended, and the identifiers a call is given.

Layer: emulator, pure. ``CallOutcome`` is what ``EmulatedCaller.run()`` reports; ``EndedBy``
names who ended the call; the helpers word the network errors that end one the same way in the
webhook (``archer.emulators.twilio.caller``) and the stream (``archer.emulators.twilio.stream``).
"""

from __future__ import annotations

import secrets
from typing import Literal, TypeVar

import attrs

__all__ = ["CallOutcome", "EndedBy", "first_leaf", "new_call_sid", "new_stream_sid", "reason"]

_E = TypeVar("_E", bound=BaseException)

EndedBy = Literal["caller", "archer", "twilio_rest", "rejected", "no_stream"]


def new_call_sid() -> str:
    """A fresh call SID: ``CA`` and 32 hex digits, as Twilio's."""
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    """A fresh stream SID: ``MZ`` and 32 hex digits, as Twilio's."""
    return "MZ" + secrets.token_hex(16)


@attrs.frozen
class CallOutcome:
    """How an emulated call went, as Twilio and the caller saw it."""

    call_sid: str
    #: None when no stream was opened.
    stream_sid: str | None
    #: Archer's answer to the voice webhook, as received.
    twiml: str
    #: The caller's μ-law timeline, one 20 ms playout tick after another from the stream's start
    #: to its end: agent audio as it played, silence (0xFF) in between.
    heard: bytes = attrs.field(repr=lambda heard: f"<{len(heard)} bytes>")
    #: Mark names echoed to Archer, in order (passed by the drain, or pending at a clear).
    marks_echoed: list[str]
    clears_received: int
    media_frames_received: int
    #: Every digit sent as a ``dtmf`` event, in order.
    dtmf_sent: str
    #: ``caller`` (script done, hung up, or a step timed out), ``archer`` (closed the stream),
    #: ``twilio_rest`` (Archer updated the call over REST), ``rejected`` (webhook or stream
    #: upgrade refused), ``no_stream`` (TwiML without a usable ``<Connect><Stream>``).
    ended_by: EndedBy
    #: The number of a ``<Dial>`` Archer sent over REST, if it transferred the call.
    transferred_to: str | None
    #: From the voice webhook to the end of the call.
    duration_s: float
    #: Each distinct problem with Archer's messages (Twilio's warning 31951), once.
    invalid: list[str]
    #: HTTP status of the status callback; None if it could not be delivered.
    status_callback_status: int | None
    #: One line on why the call ended (a timeout, a refusal, the TwiML that had no stream).
    detail: str = ""
    #: Script steps finished; a ``wait_for_hangup`` counts once Archer ends the call.
    steps_done: int = 0


def reason(exc: BaseException) -> str:
    """One line naming an error: its type, and its message if it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def first_leaf(group: BaseExceptionGroup[_E], kind: type[_E]) -> _E:
    """The first leaf of an ``except*`` group (trio-websocket nests them in nurseries)."""
    leaf: BaseException = group.exceptions[0]
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, kind)
    return leaf
