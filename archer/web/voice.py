"""``POST /twilio/voice``: a call comes in; open its record and tell Twilio to stream it to us.

Layer: web. Validates the signature, opens the call row (finding or creating the customer),
mints the one-time stream token and answers TwiML. Never a 500: with the database down the
caller hears a short apology and Twilio hangs up. At ``MAX_ACTIVE_CALLS`` (``archer.web.capacity``)
the caller hears a short apology, or is sent to ``OVERFLOW_NUMBER``, and the call is written as
one finished row with ``end_reason=overflow``.

A call is armed once (issue 19): a repeated webhook for a CallSid (a replay of a captured,
signed request; the signature covers only the URL and form, so it replays perfectly) is
answered ``<Hangup/>`` and never gets a token, whether the first token is live, spent or
expired. Twilio's ``I-Twilio-Idempotency-Token`` header does not help here: it is not covered
by the signature, so a replayer can send, copy or leave it out at will; it is only logged.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

import structlog
import trio
from quart import Blueprint, Response, request

from archer.call.records import CallRecord, NewCall
from archer.call.state import utc_now
from archer.errors import StoreError
from archer.logs import mask_phone
from archer.phone import e164_or_none
from archer.twilio import twiml
from archer.twilio.form import VoiceForm, voice_form
from archer.web.stream_tokens import new_stream_token, stream_token_hash
from archer.web.twilio_auth import signed_form

if TYPE_CHECKING:
    from archer.web.services import Services

log = structlog.get_logger(__name__)

APOLOGY: Final = (
    "We're sorry, we can't take your call right now. Please try again in a few minutes."
)
TWIML_CONTENT_TYPE: Final = "text/xml"
#: Said when this process is at MAX_ACTIVE_CALLS and no OVERFLOW_NUMBER is set.
BUSY_APOLOGY: Final = (
    "We're sorry, all our lines are busy right now. Please call again in a few minutes."
)
#: The overflow row is a courtesy to the records; the caller's answer never waits longer.
OVERFLOW_WRITE_TIMEOUT: Final = 2.0


def voice_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("voice", __name__)
    settings = services.settings

    @blueprint.post("/twilio/voice")
    async def incoming_call() -> Response | tuple[str, int]:
        params = await signed_form(services, "/twilio/voice")
        if params is None:
            return "forbidden", 403
        form = voice_form(params)  # a malformed field is a 400 (archer.app), before any write
        call_sid = form.call_sid
        if services.drain.draining:
            # Shutting down: this process takes no new call; the caller can try again at once.
            log.info("call.refused_draining", call_sid=call_sid)
            services.metrics.apology()
            return Response(twiml.apology(APOLOGY), content_type=TWIML_CONTENT_TYPE)
        if not services.capacity.admit(call_sid):
            return await _overflow(services, form, call_sid)
        from_number = form.from_number
        caller_e164 = e164_or_none(from_number)
        token = new_stream_token()
        now = utc_now()
        new_call = NewCall(
            call_sid=call_sid,
            from_number=from_number,
            to_number=form.to_number,
            caller_e164=caller_e164,
            stream_token_hash=stream_token_hash(token),
            stream_token_expires_at=now + timedelta(seconds=settings.limits.stream_token_ttl),
            started_at=now,
        )
        with structlog.contextvars.bound_contextvars(call_sid=call_sid):
            try:
                opened = await services.store.open_call(new_call)
            except StoreError as exc:
                services.capacity.release(call_sid)
                log.error("call.rejected_database_unavailable", error=str(exc))
                services.metrics.apology()
                return Response(twiml.apology(APOLOGY), content_type=TWIML_CONTENT_TYPE)
            if not opened.armed:
                services.capacity.release(call_sid)  # no stream will come for a refused repeat
                log.warning(
                    "call.webhook_repeated",
                    idempotency_token=request.headers.get("I-Twilio-Idempotency-Token") is not None,
                )
                return Response(twiml.hang_up(), content_type=TWIML_CONTENT_TYPE)
            log.info(
                "call.incoming",
                caller=mask_phone(caller_e164 or from_number),
                customer_id=opened.customer_id,
            )
        body = twiml.connect_stream(
            stream_url=settings.media_stream_url,
            parameters={
                "call_sid": call_sid,
                "customer_id": "" if opened.customer_id is None else str(opened.customer_id),
                "customer_phone": caller_e164 or "",
                "token": token,
            },
            recording_callback=(
                f"{settings.webhook_base_url}/twilio/recording"
                if settings.recording == "dual"
                else None
            ),
            notice=settings.recording_notice,
        )
        return Response(body, content_type=TWIML_CONTENT_TYPE)

    return blueprint


async def _overflow(services: Services, form: VoiceForm, call_sid: str) -> Response:
    """Answer a call that finds this process full: the overflow number, or the apology.

    The call is written as one finished row (``failed``, or ``transferred`` when sent to
    ``OVERFLOW_NUMBER``, with ``end_reason=overflow``) so the record says why the caller never
    reached the agent, and Twilio's later status callback lands on that row instead of leaving
    a bare ``initiated`` one. Best effort: the answer never waits on it beyond
    ``OVERFLOW_WRITE_TIMEOUT``, and a database error is only logged.

    Cancellation: the row may or may not be written; nothing else is left behind.
    """
    overflow_number = services.settings.overflow_number
    capacity = services.capacity
    with structlog.contextvars.bound_contextvars(call_sid=call_sid):
        log.warning(
            "call.overflow",
            live_calls=capacity.live_calls,
            reserved_calls=capacity.reserved_calls,
            max_active_calls=capacity.max_active_calls,
            redirected=bool(overflow_number),
        )
        services.metrics.overflow(redirected=bool(overflow_number))
        now = utc_now()
        record = CallRecord(
            call_sid=call_sid,
            status="transferred" if overflow_number else "failed",
            started_at=now,
            ended_at=now,
            from_number=form.from_number,
            to_number=form.to_number,
            end_reason="overflow",
        )
        with trio.move_on_after(OVERFLOW_WRITE_TIMEOUT):
            try:
                await services.store.save_call(record)
            except StoreError as exc:
                log.error("call.overflow_not_recorded", error=str(exc))
    body = twiml.dial(overflow_number) if overflow_number else twiml.apology(BUSY_APOLOGY)
    return Response(body, content_type=TWIML_CONTENT_TYPE)
