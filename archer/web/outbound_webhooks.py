"""Twilio's webhooks for the calls Archer places: the answer, the status callbacks, the AMD verdict.

Layer: web. Every route is signed (``X-Twilio-Signature`` of the public URL) and names the
outbound request and attempt in its path (ids only: nothing about the customer travels in a URL
or a Twilio parameter).

- ``POST /twilio/outbound/{request}/{attempt}/answer``: the callee answered; the call row is
  opened and the one-time stream token minted now, and the TwiML connects the media stream
  (``call_sid`` and ``token`` are its only parameters; the context stays in the database).
- ``POST /twilio/outbound/{request}/{attempt}/status``: Twilio's status callbacks. ``no-answer``,
  ``busy`` and ``failed`` end the attempt (retried after ``OUTBOUND_RETRY_DELAY`` while attempts
  remain); ``completed`` ends it answered; ``canceled`` ends it for good.
- ``POST /twilio/outbound/{request}/{attempt}/amd``: the asynchronous answering-machine verdict.
  ``machine_end_*``: the call's TwiML is replaced by REST with ``OUTBOUND_VOICEMAIL_MESSAGE`` and
  a hang-up (the stream ends, and with it the agent session); ``end_reason=voicemail``. ``fax``:
  hung up, ``end_reason=fax``. ``human``/``unknown``: recorded; the conversation goes on.

All are idempotent: Twilio may send a callback twice, and an attempt already ended stays so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

import structlog
from quart import Blueprint, Response

from archer.call.outbound import attempt_path
from archer.call.records import NewCall
from archer.call.state import utc_now
from archer.errors import StoreError, TelephonyError
from archer.phone import e164_or_none
from archer.twilio import twiml
from archer.twilio.form import voice_form
from archer.web.stream_tokens import new_stream_token, stream_token_hash
from archer.web.twilio_auth import signed_form
from archer.web.voice import TWIML_CONTENT_TYPE

if TYPE_CHECKING:
    from archer.web.services import Services

log = structlog.get_logger(__name__)

#: Twilio's terminal statuses, as outcomes of an attempt.
FINAL_STATUSES: Final = frozenset({"completed", "no-answer", "busy", "failed", "canceled"})
#: Twilio's statuses that mean the callee picked up.
ANSWERED_STATUSES: Final = frozenset({"in-progress", "answered"})


def outbound_webhooks_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("outbound_webhooks", __name__)
    settings = services.settings

    def empty() -> Response:
        return Response(twiml.empty(), content_type=TWIML_CONTENT_TYPE)

    async def signed(request_id: int, attempt: int, what: str) -> dict[str, str] | None:
        return await signed_form(services, attempt_path(request_id, attempt, what))

    @blueprint.post("/twilio/outbound/<int:request_id>/<int:attempt>/answer")
    async def answer(request_id: int, attempt: int) -> Response | tuple[str, int]:
        params = await signed(request_id, attempt, "answer")
        if params is None:
            return "forbidden", 403
        queue = services.outbound
        if queue is None:
            return Response(twiml.hang_up(), content_type=TWIML_CONTENT_TYPE)
        form = voice_form(params)  # a malformed field is a 400 (archer.app), before any write
        call_sid = form.call_sid
        token = new_stream_token()
        now = utc_now()
        new_call = NewCall(
            call_sid=call_sid,
            from_number=form.from_number,
            to_number=form.to_number,
            # Outbound: the customer is the number Archer rang.
            caller_e164=e164_or_none(form.to_number),
            stream_token_hash=stream_token_hash(token),
            stream_token_expires_at=now + timedelta(seconds=settings.limits.stream_token_ttl),
            started_at=now,
        )
        with structlog.contextvars.bound_contextvars(
            call_sid=call_sid, outbound_request=request_id, attempt=attempt
        ):
            try:
                opened = await services.store.open_call(new_call)
                current = await queue.attempt_answered(request_id, attempt, call_sid=call_sid)
            except StoreError as exc:
                log.error("outbound.answer_not_recorded", error=str(exc))
                return Response(twiml.hang_up(), content_type=TWIML_CONTENT_TYPE)
            if not opened.armed or not current:
                # A repeated fetch, or an attempt that already ended: no second stream.
                log.warning("outbound.answer_refused", armed=opened.armed, current=current)
                return Response(twiml.hang_up(), content_type=TWIML_CONTENT_TYPE)
            log.info("outbound.answered", customer_id=opened.customer_id)
        body = twiml.connect_stream(
            stream_url=settings.media_stream_url,
            parameters={"call_sid": call_sid, "token": token},
        )
        return Response(body, content_type=TWIML_CONTENT_TYPE)

    @blueprint.post("/twilio/outbound/<int:request_id>/<int:attempt>/status")
    async def status(request_id: int, attempt: int) -> Response | tuple[str, int]:
        params = await signed(request_id, attempt, "status")
        if params is None:
            return "forbidden", 403
        queue = services.outbound
        call_status = params.get("CallStatus", "")
        if not call_status or not params.get("CallSid"):
            return "CallSid and CallStatus are required", 400
        if queue is None:
            return empty()
        with structlog.contextvars.bound_contextvars(
            call_sid=params["CallSid"], outbound_request=request_id, attempt=attempt
        ):
            try:
                if call_status in FINAL_STATUSES:
                    new_status = await queue.attempt_ended(
                        request_id,
                        attempt,
                        call_status,
                        retry_delay=settings.outbound_retry_delay,
                        max_attempts=settings.outbound_max_attempts,
                        answered_by=params.get("AnsweredBy") or None,
                    )
                    log.info("outbound.attempt_ended", outcome=call_status, status=new_status)
                elif call_status in ANSWERED_STATUSES:
                    await queue.attempt_answered(request_id, attempt)
            except StoreError as exc:
                log.error("outbound.status_not_recorded", twilio_status=call_status, error=str(exc))
                return "database unavailable", 503
        return empty()

    @blueprint.post("/twilio/outbound/<int:request_id>/<int:attempt>/amd")
    async def amd(request_id: int, attempt: int) -> Response | tuple[str, int]:
        params = await signed(request_id, attempt, "amd")
        if params is None:
            return "forbidden", 403
        call_sid = params.get("CallSid", "")
        answered_by = params.get("AnsweredBy", "")
        if not call_sid or not answered_by:
            return "CallSid and AnsweredBy are required", 400
        queue = services.outbound
        if queue is None:
            return empty()
        end_reason = (
            "voicemail"
            if answered_by.startswith("machine_end_")
            else "fax"
            if answered_by == "fax"
            else None
        )
        with structlog.contextvars.bound_contextvars(
            call_sid=call_sid, outbound_request=request_id, attempt=attempt
        ):
            try:
                current = await queue.attempt_answered(
                    request_id, attempt, answered_by=answered_by[:40], end_reason=end_reason
                )
            except StoreError as exc:
                log.error("outbound.amd_not_recorded", error=str(exc))
                return "database unavailable", 503
            log.info("outbound.answered_by", answered_by=answered_by, current=current)
            if end_reason is None or not current:
                return empty()
            await _end_for_machine(services, call_sid, end_reason)
        return empty()

    return blueprint


async def _end_for_machine(services: Services, call_sid: str, end_reason: str) -> None:
    """A voicemail gets the message and a hang-up; a fax a hang-up. Failures are logged."""
    telephony = services.outbound_telephony
    if telephony is None:
        log.error("outbound.no_telephony", end_reason=end_reason)
        return
    try:
        if end_reason == "voicemail":
            await telephony.leave_voicemail(call_sid, services.settings.outbound_voicemail_message)
        else:
            await telephony.hang_up(call_sid)
    except TelephonyError as exc:
        log.warning("outbound.machine_not_handled", end_reason=end_reason, error=str(exc))
