"""``POST /twilio/status``: Twilio's call status callback; the final status lands on the row.

Layer: web. Idempotent and order-free: it may come twice, late, or before the stream has ended.
It writes the Twilio columns, which the call's own flush never touches, and, for a terminal
status of a call no live instance carries (its instance died, or no stream ever came), finishes
the call at once (``SqlCallStore.record_twilio_status``).

Rules: Twilio does not retry a failed status callback by default, so one the database cannot
take is spooled with the call records (and replayed after them) and answered 200; only when
even the spool refuses is it 503, with everything logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from quart import Blueprint, Response

from archer.call.records import TwilioStatusUpdate
from archer.errors import StoreError
from archer.twilio import twiml
from archer.twilio.form import status_form
from archer.web.twilio_auth import signed_form

if TYPE_CHECKING:
    from archer.web.services import Services

log = structlog.get_logger(__name__)


def status_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("status", __name__)

    @blueprint.post("/twilio/status")
    async def call_status() -> Response | tuple[str, int]:
        params = await signed_form(services, "/twilio/status")
        if params is None:
            return "forbidden", 403
        status_form(params)  # a malformed field is a 400 (archer.app), before any write
        call_sid = params.get("CallSid", "")
        status = params.get("CallStatus", "")
        if not call_sid or not status:
            return "CallSid and CallStatus are required", 400
        duration = params.get("CallDuration", "")
        update = TwilioStatusUpdate(
            call_sid=call_sid,
            twilio_status=status[:32],
            twilio_duration_s=int(duration) if duration.isdigit() else None,
        )
        with structlog.contextvars.bound_contextvars(call_sid=call_sid):
            try:
                finished = await services.store.record_twilio_status(update)
            except StoreError as exc:
                log.warning("call.status_not_recorded", error=str(exc))
                try:
                    await services.spool.append_status(update)
                except OSError as spool_error:
                    # Twilio shows a failed callback in its debugger; the status is logged.
                    log.error(
                        "call.status_lost",
                        twilio_status=update.twilio_status,
                        twilio_duration_s=update.twilio_duration_s,
                        error=str(spool_error),
                    )
                    return "database unavailable", 503
                log.warning("call.status_spooled", twilio_status=update.twilio_status)
                return Response(twiml.empty(), content_type="text/xml")
            if finished is not None:
                # The instance that carried the call is gone (or none ever did): this callback
                # is what finished it.
                log.warning(
                    "call.finished_by_status_callback",
                    end_reason=finished,
                    twilio_status=update.twilio_status,
                )
            log.info("call.twilio_status", twilio_status=update.twilio_status)
        return Response(twiml.empty(), content_type="text/xml")

    return blueprint
