"""Outbound calls as values: what a ``POST /calls`` body may say, and the calling window.

Layer: pure (no I/O, no trio, no logging). The web route and ``archer call`` parse requests
here, the settings parse the window here, and the database adapter's dispatcher asks the
window whether the database's current time is inside it.

Rules: a bad body is one ``OutboundRequestError`` naming the field and what is wrong, never its
value beyond what the caller sent about the number's shape; nothing about the customer is
carried here beyond the number to ring and the bank's transaction id.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from archer.errors import ArcherError

__all__ = [
    "ALWAYS",
    "MAX_IDEMPOTENCY_KEY",
    "PURPOSES",
    "STATUS_EVENTS",
    "Attempt",
    "CallRequest",
    "CallingWindow",
    "Claim",
    "OutboundRequestError",
    "OutgoingCall",
    "QueuedCall",
    "RequestView",
    "UnknownTransactionError",
    "attempt_path",
    "parse_call_request",
    "parse_window",
    "parse_zone",
]

#: Why Archer may ring a customer; ``archer.db.tables.OUTBOUND_PURPOSES`` mirrors it.
PURPOSES: Final[tuple[str, ...]] = ("fraud_alert",)

_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_WINDOW: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
#: A transaction id is a positive bigint.
_MAX_ID: Final = 2**63 - 1
#: An Idempotency-Key is the client's opaque text; bounded so a row stays small.
MAX_IDEMPOTENCY_KEY: Final = 200


class UnknownTransactionError(ArcherError):
    """The request names a transaction the bank does not have."""


@attrs.frozen(slots=True)
class QueuedCall:
    """The answer to a ``POST /calls``; ``created`` is False for an idempotent repeat."""

    id: int
    status: str
    created: bool


@attrs.frozen(slots=True)
class Attempt:
    attempt: int
    call_sid: str | None
    outcome: str | None
    started_at: datetime
    ended_at: datetime | None


@attrs.frozen(slots=True)
class RequestView:
    """What ``GET /calls/{id}`` answers."""

    id: int
    status: str
    purpose: str
    answered_by: str | None
    end_reason: str | None
    call_id: int | None
    created_at: datetime
    attempts: tuple[Attempt, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status,
            "purpose": self.purpose,
            "answered_by": self.answered_by,
            "end_reason": self.end_reason,
            "call_id": self.call_id,
            "created_at": self.created_at.isoformat(),
            "attempts": [
                {
                    "attempt": a.attempt,
                    "call_sid": a.call_sid,
                    "outcome": a.outcome,
                    "started_at": a.started_at.isoformat(),
                    "ended_at": None if a.ended_at is None else a.ended_at.isoformat(),
                }
                for a in self.attempts
            ],
        }


class OutboundRequestError(ValueError):
    """A ``POST /calls`` body (or ``archer call`` arguments) Archer will not queue; one line."""


@attrs.frozen(slots=True)
class CallRequest:
    """A valid request to ring ``to`` about ``transaction_id`` for ``purpose``."""

    to: str
    purpose: str
    transaction_id: int


def parse_call_request(body: object) -> CallRequest:
    """The request in a decoded JSON body.

    Raises:
        OutboundRequestError: the body is not an object with exactly ``to`` (E.164),
            ``purpose`` (one of ``PURPOSES``) and ``transaction_id`` (a positive integer).
    """
    if not isinstance(body, dict):
        raise OutboundRequestError("the body must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in ("to", "purpose", "transaction_id"))
    if unknown:
        raise OutboundRequestError(f"unknown field {unknown[0]!r}")
    to = _field(body, "to")
    if not isinstance(to, str) or not _E164.fullmatch(to):
        raise OutboundRequestError("'to' must be an E.164 number: + and 7 to 15 digits")
    purpose = _field(body, "purpose")
    if purpose not in PURPOSES:
        raise OutboundRequestError(f"'purpose' must be one of: {', '.join(PURPOSES)}")
    transaction_id = _field(body, "transaction_id")
    if (
        isinstance(transaction_id, bool)
        or not isinstance(transaction_id, int)
        or not 0 < transaction_id <= _MAX_ID
    ):
        raise OutboundRequestError("'transaction_id' must be a positive whole number")
    return CallRequest(to=to, purpose=str(purpose), transaction_id=transaction_id)


def _field(body: dict[Any, Any], name: str) -> object:
    if name not in body:
        raise OutboundRequestError(f"'{name}' is required")
    return body[name]


@attrs.frozen(slots=True)
class CallingWindow:
    """The local hours in which customers may be rung, e.g. 08:00-21:00 Europe/London.

    ``start`` is inclusive, ``end`` exclusive; a window whose end is before its start runs
    over midnight. ``24:00`` as the end means the end of the day.
    """

    start: time
    end: time | None  # None: midnight at the end of the day
    zone: ZoneInfo

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` (timezone-aware; the database's clock) is inside the window."""
        if moment.utcoffset() is None:
            raise ValueError("a naive datetime has no place in the calling window")
        local = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.end is None:
            return local >= self.start
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def describe(self) -> str:
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end} {self.zone.key}"


def parse_window(text: str, zone: ZoneInfo) -> CallingWindow:
    """``HH:MM-HH:MM`` in ``zone``.

    Raises:
        ValueError: not two 24-hour times joined by ``-``, or both the same.
    """
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError("two 24-hour times joined by '-', like 08:00-21:00")
    start = time(int(match[1]), int(match[2]))
    if match[3] == "24":
        if match[4] != "00":
            raise ValueError("two 24-hour times joined by '-', like 08:00-21:00")
        return CallingWindow(start=start, end=None, zone=zone)
    end = time(int(match[3]), int(match[4]))
    if end == start:
        raise ValueError("an empty window (start equals end); use 00:00-24:00 for all day")
    return CallingWindow(start=start, end=end, zone=zone)


def parse_zone(text: str) -> ZoneInfo:
    """An IANA time zone such as ``Europe/London``.

    Raises:
        ValueError: no such zone.
    """
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("an IANA time zone such as Europe/London") from None


#: Every hour of every day, in UTC (the default window).
ALWAYS: Final = CallingWindow(start=time(0, 0), end=None, zone=ZoneInfo("UTC"))


@attrs.frozen(slots=True)
class Claim:
    """A request this instance now dials: attempt ``attempt`` of request ``request_id``."""

    request_id: int
    attempt: int
    to: str
    purpose: str
    transaction_id: int
    #: The database's clock when it was claimed (the pace is measured on it).
    claimed_at: datetime


@attrs.frozen(slots=True)
class OutgoingCall:
    """What a Calls API create request carries for one attempt: numbers and Archer's URLs.

    Nothing about the customer beyond the number to ring: the URLs name the request and the
    attempt by id only, and the context stays in the database.
    """

    to: str
    from_number: str
    #: Fetched (signed) when the callee answers: Archer's TwiML for the attempt.
    answer_url: str
    #: Twilio's status callbacks (initiated, ringing, answered, completed) for the attempt.
    status_callback: str
    #: The asynchronous answering-machine verdict for the attempt.
    amd_callback: str
    #: Seconds to let it ring.
    ring_timeout: int


#: The status callback events asked for on every outbound call.
STATUS_EVENTS: Final[tuple[str, ...]] = ("initiated", "ringing", "answered", "completed")


def attempt_path(request_id: int, attempt: int, what: str) -> str:
    """Archer's path for one attempt's webhook ``what`` (answer, status or amd)."""
    return f"/twilio/outbound/{request_id}/{attempt}/{what}"
