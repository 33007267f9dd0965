"""The outbound dispatcher: every instance runs one; together they drain the outbound queue.

Layer: call (written against the ``OutboundDispatchQueue`` and ``CallPlacer`` ports; the server
wires the SQL queue and Twilio's REST adapter in).

Rules:

- The database decides who dials what and when (``archer.db.outbound``: the pace, the cap on
  active calls, the calling window, ``FOR UPDATE SKIP LOCKED``). This loop only asks for a claim,
  places that one call, and writes the CallSid back; it keeps no state of its own.
- Exactly once: an attempt is placed only by the instance that claimed it, only after the claim
  committed. A refusal Twilio answered (an HTTP status) placed nothing, so it is a ``failed``
  attempt, retried after ``OUTBOUND_RETRY_DELAY``; a request that got no answer (timeout,
  network) may have placed the call, so it is ended as ``unknown`` and not retried.
- The Calls API request carries the numbers and Archer's own URLs (request id and attempt
  number only): nothing about the customer or the payment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

from archer.call.outbound import OutgoingCall, attempt_path
from archer.errors import StoreError, TelephonyError

if TYPE_CHECKING:
    from archer.call.outbound import Claim
    from archer.call.ports import CallPlacer, OutboundDispatchQueue
    from archer.settings import Settings

__all__ = ["outgoing_call", "run_dispatcher"]

log = structlog.get_logger(__name__)


def outgoing_call(claim: Claim, settings: Settings) -> OutgoingCall:
    """The Calls API request for ``claim``: the number, the caller ID and Archer's URLs."""
    base = settings.webhook_base_url.rstrip("/")

    def url(what: str) -> str:
        return base + attempt_path(claim.request_id, claim.attempt, what)

    return OutgoingCall(
        to=claim.to,
        from_number=settings.outbound_from_number,
        answer_url=url("answer"),
        status_callback=url("status"),
        amd_callback=url("amd"),
        ring_timeout=settings.outbound_ring_timeout,
    )


async def run_dispatcher(
    queue: OutboundDispatchQueue,
    placer: CallPlacer,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Claim and place outbound calls until cancelled.

    When nothing may be dialled it waits half a pacing interval (at most a second) and asks
    again; a database that is down is logged once and retried.

    Cancellation: stops between claims or while placing one; a claim already committed whose
    call was not placed stays ``dialing`` under this instance until it is ended (see
    ``SqlOutbound.abandon_lost``), never dialled twice.
    """
    window = settings.calling_window()
    idle = min(1.0, 0.5 / settings.outbound_cps)
    failing = False
    next_sweep = trio.current_time()
    task_status.started()
    while True:
        if trio.current_time() >= next_sweep:
            next_sweep = trio.current_time() + settings.reaper_interval
            await _sweep(queue, settings)
        try:
            claim = await queue.claim(
                settings.instance_id,
                cps=settings.outbound_cps,
                max_active=settings.outbound_max_active,
                window=window,
            )
        except StoreError as exc:
            if not failing:
                log.warning("outbound.claim_failed", error=str(exc))
            failing = True
            await trio.sleep(idle)
            continue
        failing = False
        if claim is None:
            await trio.sleep(idle)
            continue
        await _place(queue, placer, settings, claim)


async def _sweep(queue: OutboundDispatchQueue, settings: Settings) -> None:
    """End the claims of dead instances (never redialled: see the module's rules)."""
    try:
        lost = await queue.abandon_lost(settings.instance_lease_seconds)
    except StoreError as exc:
        log.warning("outbound.sweep_failed", error=str(exc))
        return
    for request_id in lost:
        log.warning("outbound.claim_lost", outbound_request=request_id)


async def _place(
    queue: OutboundDispatchQueue, placer: CallPlacer, settings: Settings, claim: Claim
) -> None:
    with structlog.contextvars.bound_contextvars(
        outbound_request=claim.request_id, attempt=claim.attempt
    ):
        try:
            call_sid = await placer.place_call(outgoing_call(claim, settings))
        except TelephonyError as exc:
            # An answer from Twilio (an HTTP status) means nothing was placed.
            outcome = "failed" if exc.status is not None else "unknown"
            log.warning("outbound.not_placed", outcome=outcome, code=exc.code, error=str(exc))
            try:
                await queue.attempt_ended(
                    claim.request_id,
                    claim.attempt,
                    outcome,
                    retry_delay=settings.outbound_retry_delay,
                    max_attempts=settings.outbound_max_attempts,
                    end_reason=None if outcome == "failed" else "placement_unknown",
                )
            except StoreError as store_exc:
                log.error("outbound.attempt_not_recorded", error=str(store_exc))
            return
        log.info("outbound.placed", call_sid=call_sid)
        try:
            await queue.attempt_placed(claim.request_id, claim.attempt, call_sid)
        except StoreError as exc:
            # The callbacks name the attempt by its URL, so they still find it.
            log.error("outbound.call_sid_not_recorded", call_sid=call_sid, error=str(exc))
