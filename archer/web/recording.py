"""``POST /twilio/recording``: Twilio's recording status callback (issue 21).

Layer: web. With ``RECORDING=dual`` the voice webhook's ``<Start><Recording>`` names this route;
Twilio posts ``in-progress``, ``completed`` or ``absent`` (with ``RecordingSid``,
``RecordingStatus``, ``RecordingChannels``, ``RecordingDuration``, ``RecordingUrl``, ``ErrorCode``).
What it says (never the audio) goes to ``call_recordings``, one row per recording, idempotently.

Rules: as ``/twilio/status``: signed; a callback the database cannot take is spooled (replayed
after the call records) and answered 200; only when even the spool refuses is it 503. A callback
for a CallSid Archer has no call for is answered 200 and logged (Twilio cannot fix it by retrying).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import structlog
from quart import Blueprint, Response

from archer.call.records import RecordingStatusUpdate
from archer.errors import StoreError
from archer.twilio import twiml
from archer.web.twilio_auth import signed_form

if TYPE_CHECKING:
    from archer.web.services import Services

log = structlog.get_logger(__name__)

#: Twilio SIDs: two letters and 32 hex digits.
_SID: Final = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
#: ``RecordingStatus`` values Twilio documents for the callback.
RECORDING_STATUSES: Final = frozenset(
    {"in-progress", "paused", "stopped", "completed", "absent", "failed"}
)


def recording_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("recording", __name__)

    @blueprint.post("/twilio/recording")
    async def recording_status() -> Response | tuple[str, int]:
        params = await signed_form(services, "/twilio/recording")
        if params is None:
            return "forbidden", 403
        call_sid = params.get("CallSid", "")
        recording_sid = params.get("RecordingSid", "")
        status = params.get("RecordingStatus", "")
        if not (_SID.fullmatch(call_sid) and _SID.fullmatch(recording_sid)):
            return "CallSid and RecordingSid are required", 400
        if status not in RECORDING_STATUSES:
            return "RecordingStatus is not one Twilio documents", 400
        url = params.get("RecordingUrl", "")
        update = RecordingStatusUpdate(
            call_sid=call_sid,
            recording_sid=recording_sid,
            status=status,
            channels=_number(params.get("RecordingChannels", "")),
            duration_s=_number(params.get("RecordingDuration", "")),
            url=url[:500] if url.startswith("https://") else None,
            error_code=_number(params.get("ErrorCode", "")),
        )
        with structlog.contextvars.bound_contextvars(call_sid=call_sid):
            try:
                known = await services.store.record_recording_status(update)
            except StoreError as exc:
                log.warning("call.recording_not_recorded", error=str(exc))
                try:
                    await services.spool.append_recording(update)
                except OSError as spool_error:
                    log.error(
                        "call.recording_lost",
                        recording_sid=recording_sid,
                        recording_status=status,
                        error=str(spool_error),
                    )
                    return "database unavailable", 503
                log.warning("call.recording_spooled", recording_status=status)
                return Response(twiml.empty(), content_type="text/xml")
            if not known:
                log.warning("call.recording_for_unknown_call", recording_sid=recording_sid)
            else:
                log.info("call.recording", recording_sid=recording_sid, recording_status=status)
        return Response(twiml.empty(), content_type="text/xml")

    return blueprint


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 9 else None
