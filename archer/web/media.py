"""``WS /ws/cartesia``: Twilio's media stream for one call, bridged to the agent.

Layer: web. The route checks who is calling (signature before accept, one-time token on
``start``), binds the call's log context, then hands over to ``archer.call.session``. It never
owns call logic; it owns the one guarantee that matters most: the ``finally`` that records
the call, whatever ended it.

Rules: quart-trio cancels this route when Twilio's socket goes away, so a disconnect arrives as
cancellation, not as an exception; the shielded flush in ``finally`` runs either way. A call
nobody finished by then ended because the socket went (``twilio_disconnected``). Hypercorn
(0.18) closing the socket itself, on a message over ``MAX_MESSAGE_BYTES`` (1009), is not
reported to the route until the TCP connection ends, and sends meanwhile are dropped silently:
a peer that holds its socket open is caught by the call's media timeout (``twilio_lost``,
``TWILIO_MEDIA_TIMEOUT``), as is any stream that stops sending. Everything after the upgrade
is accepted (``carry_stream``) is shared with the dedicated media listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio
from quart import Blueprint, websocket

from archer.audio.transcoder import FRAME_MS
from archer.call.reconnect import ReconnectPolicy
from archer.call.records import CallRecord, StreamClaim
from archer.call.session import bridge_call, flush_call_record
from archer.call.session_facts import SessionValue, session_variables
from archer.call.state import CallState, utc_now
from archer.errors import StoreError, TwilioProtocolError
from archer.twilio.form import TwilioFormError, check_stream_start
from archer.twilio.stream import TwilioMediaStream
from archer.web.stream_tokens import stream_token_hash
from archer.web.twilio_auth import stream_upgrade_signed

if TYPE_CHECKING:
    from archer.twilio.frames import Start
    from archer.web.services import Services

log = structlog.get_logger(__name__)


def media_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("media", __name__)

    @blueprint.websocket("/ws/cartesia")
    async def media_stream() -> tuple[str, int] | None:
        # Before accept: a forged upgrade is refused with 403 and never becomes a socket.
        if not stream_upgrade_signed(
            services,
            websocket.headers.get,
            websocket.path,
            websocket.query_string.decode("latin-1"),
        ):
            return "forbidden", 403
        await websocket.accept()
        # The proxy's target, so the call's tasks hold the object rather than a context lookup.
        await carry_stream(services, TwilioMediaStream(websocket._get_current_object()))  # type: ignore[attr-defined]
        # Returning closes Twilio's socket; the TwiML's <Hangup/> then ends the phone call.
        return None

    return blueprint


async def carry_stream(services: Services, twilio: TwilioMediaStream) -> None:
    """Read the accepted stream's ``start``, claim its call, bridge it and record it.

    Shared by the quart-trio route and the dedicated media listener
    (``archer.web.media_listener``). Returns when the call is over and recorded; the caller
    closes the socket.
    """
    limits = services.settings.limits
    try:
        with trio.fail_after(limits.twilio_start_timeout):
            start = await twilio.wait_for_start()
    except trio.TooSlowError:
        log.warning("stream.no_start", timeout=limits.twilio_start_timeout)
        return
    except TwilioProtocolError as exc:
        log.warning("stream.bad_start", error=str(exc))
        return
    with structlog.contextvars.bound_contextvars(
        call_sid=start.call_sid, stream_sid=start.stream_sid
    ):
        call = await _claim(services, start)
        # From here the call is live (counted by the drain below) or refused: its place
        # reserved by the webhook is no longer needed.
        services.capacity.release(start.call_sid)
        if call is None:
            return
        log.info("call.started", customer_id=call.customer_id)
        services.metrics.call_started()
        with services.drain.call():
            await _carry(services, call, twilio)


async def _session_facts(services: Services, call: CallState) -> dict[str, SessionValue]:
    """An outbound call's purpose and payment facts for its agent; empty for inbound calls.

    A database failure here is logged and the call goes on without them: the agent can still
    verify the customer and offer a colleague, which beats hanging up on them.
    """
    if services.call_facts is None:
        return {}
    try:
        facts = await services.call_facts.payment_facts(call.call_sid)
    except StoreError as exc:
        log.error("outbound.facts_unavailable", error=str(exc))
        return {}
    if facts is None:
        return {}
    log.info("outbound.session_facts", purpose=facts.purpose, transaction_id=facts.transaction_id)
    return session_variables(facts)


async def _carry(services: Services, call: CallState, twilio: TwilioMediaStream) -> None:
    """Bridge the call, then record it, however it ended (cancellation included)."""
    settings, limits = services.settings, services.settings.limits
    try:
        facts = await _session_facts(services, call)
        await bridge_call(
            call,
            twilio,
            services.agents,
            services.tools,
            limits=limits,
            audio_format=settings.cartesia_audio_format,
            resample_quality=settings.resample_quality,
            output_format=settings.agent_output_format,
            agent_batch_frames=settings.agent_audio_batch_ms // FRAME_MS,
            store=services.store,
            dtmf_to_agent=settings.dtmf_to_agent,
            reconnect=ReconnectPolicy(
                attempts=settings.agent_reconnect_attempts,
                window=settings.agent_reconnect_window,
                human_agent_number=settings.human_agent_number,
                resume_variables=settings.agent_resume_variables,
            ),
            facts=facts,
        )
    finally:
        # Nothing finished the call: we were cancelled, because Twilio's socket went (quart-trio
        # cancels the route) or because the server stopped after draining.
        if services.drain.draining:
            call.finish("failed", "server_shutdown")
        call.finish("completed", "twilio_disconnected")
        call.close(now=utc_now(), clock=trio.current_time())
        record = call.snapshot()
        # Shielded and time-boxed inside flush_call_record.
        if await flush_call_record(  # noqa: ASYNC102
            services.store, services.spool, record, timeout=limits.flush_timeout
        ):
            call.db_writes += 1
        summary = call.summary()
        log.info("call.finished", **summary)
        _report(services, call, summary, record)


def _report(
    services: Services, call: CallState, summary: dict[str, object], record: CallRecord
) -> None:
    """The call, once, to the metrics (nothing per frame reaches them)."""
    metrics = services.metrics
    metrics.call_finished(summary, record)
    if call.agent_setup_seconds is not None:
        metrics.agent_ready(call.agent_setup_seconds)
    for direction, seconds in call.latency_samples:
        metrics.frame_latency(direction, seconds)


async def _claim(services: Services, start: Start) -> CallState | None:
    """Spend the stream's one-time token; None (logged) if it is not a call we answered."""
    token = start.custom_parameters.get("token", "")
    if not token:
        log.warning("stream.rejected", reason="no token")
        return None
    try:
        check_stream_start(start.call_sid, start.stream_sid, token)
    except TwilioFormError as exc:
        log.warning("stream.rejected", reason=str(exc))
        return None
    now = utc_now()
    try:
        claimed = await services.store.claim_stream(
            StreamClaim(
                call_sid=start.call_sid,
                stream_sid=start.stream_sid,
                stream_token_hash=stream_token_hash(token),
                now=now,
            )
        )
    except StoreError as exc:
        log.error("stream.rejected", reason="database unavailable", error=str(exc))
        return None
    if claimed is None:
        # Unknown, spent or expired: the row (if any) is left alone, so a forged stream
        # cannot mark a real call as failed.
        log.warning("stream.rejected", reason="token unknown, used or expired")
        return None
    return CallState.for_claimed(
        claimed, stream_sid=start.stream_sid, connected_at=now, clock=trio.current_time()
    )
