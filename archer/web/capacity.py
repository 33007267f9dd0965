"""Capacity: how many calls this process carries, and whether it may take one more.

Layer: web. One ``Capacity`` per server, shared by the routes: the voice webhook asks
``admit`` before it answers a call with a stream, ``/readyz`` reports ``snapshot`` (and answers
503 when full, so the load balancer sends new calls elsewhere), and ``carry_stream`` releases a
call's reservation once its stream has claimed it. Mutated only on the trio thread.

Rules:
- A call counts where it is really carried: ``Drain.live_calls``, which the media route and the
  dedicated media listener both move (``archer.web.media.carry_stream``).
- Between the webhook's answer and the stream's ``start`` (usually well under a second) a call
  is carried nowhere yet, so a burst of webhooks could all pass a check of live calls alone.
  The webhook therefore *reserves* a place for ``RESERVATION_SECONDS``; the stream releases it
  when it claims the call. The stream may land on another instance (the token is in the
  database), in which case the reservation here simply lapses: for a few seconds this process
  believes itself a little fuller than it is, which errs on the side of the caller.
- The cap gates new calls only. A stream for a call already answered (here or elsewhere) is
  always carried, so a process may briefly carry more than the cap: refusing it would cut a
  call someone is already on.
- The reservations are bounded: one is made only below the cap, so there are never more than
  ``max_active_calls`` of them.
"""

from __future__ import annotations

from typing import Final

import attrs
import trio

from archer.web.drain import Drain

#: How long a webhook-answered call holds its place while its stream is on the way. Twilio
#: opens the stream right after reading the TwiML; this covers a slow network and start-up,
#: and is short, so a stream that went to another instance frees the place soon.
RESERVATION_SECONDS: Final = 10.0


@attrs.define
class Capacity:
    """The cap, the live calls (``drain``) and the places reserved for streams on the way."""

    max_active_calls: int
    drain: Drain
    reservation_seconds: float = RESERVATION_SECONDS
    #: CallSid -> trio time at which its reservation lapses.
    _reserved: dict[str, float] = attrs.Factory(dict)

    @property
    def live_calls(self) -> int:
        return self.drain.live_calls

    @property
    def reserved_calls(self) -> int:
        """Reservations not yet claimed or lapsed."""
        self._forget_lapsed()
        return len(self._reserved)

    @property
    def full(self) -> bool:
        return self.live_calls + self.reserved_calls >= self.max_active_calls

    def admit(self, call_sid: str) -> bool:
        """Reserve a place for ``call_sid`` if there is one; False when at the cap.

        A retried webhook for a call that already holds a reservation is admitted again.
        """
        self._forget_lapsed()
        if call_sid not in self._reserved and self.full:
            return False
        self._reserved[call_sid] = trio.current_time() + self.reservation_seconds
        return True

    def release(self, call_sid: str) -> None:
        """The call's stream arrived (here): it is counted as live now, or it was refused."""
        self._reserved.pop(call_sid, None)

    def snapshot(self) -> dict[str, int | bool]:
        """What ``/readyz`` reports: live and reserved calls, the cap, and whether draining."""
        return {
            "live_calls": self.live_calls,
            "reserved_calls": self.reserved_calls,
            "max_active_calls": self.max_active_calls,
            "draining": self.drain.draining,
        }

    def _forget_lapsed(self) -> None:
        now = trio.current_time()
        for call_sid in [sid for sid, until in self._reserved.items() if until <= now]:
            del self._reserved[call_sid]
