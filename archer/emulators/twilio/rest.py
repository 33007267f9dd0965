"""An emulator of Twilio's REST call-update endpoint, for tests and the demo.

Layer: emulator (quart-trio on hypercorn). Serves one route,
``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, against a ``TwilioRestState``
the test (or demo) owns: it adds live calls, then inspects the updates Archer sent.

Behaviour, in the order it is checked (reference §5.1; codes Twilio documents):

- HTTP Basic auth must be ``AccountSid:AuthToken``, else 401, code 20003.
- Another account's path, or an unknown call SID: 404, code 20404.
- ``Twiml`` and ``Url`` together: 400 with no ``code`` (which code Twilio uses is not verified,
  so none is invented; twilio-python then reports the HTTP status as the code).
- ``Twiml`` over 4000 characters: 400, code 32018; TwiML that is not XML: 400, code 12100.
- Any update of a call that is already over: 400, code 21220 ("Call is not in-progress. Cannot
  redirect."). Which of 21220 and 20404 Twilio answers to ``Status=completed`` on an ended call
  is not known (§5.1); this emulator always says 21220, so the 404 path is exercised by unknown
  calls and the 21220 path by ended ones.
- Otherwise the update is recorded and applied: ``Status=completed`` ends the call, TwiML with a
  ``<Dial>`` records ``transferred_to`` (the call stays in progress, as a dialled transfer
  does), and the answer is the call resource as JSON with every key twilio-python reads.

The Call Recording update (issue 21) has a blueprint of its own (``_recordings_blueprint``):
the pause and resume Archer makes during a keypad PIN entry.

Adding an endpoint (creating calls, recordings): a route in a blueprint of its own, registered in
``twilio_rest_app``, that answers ``_unauthenticated(state)`` first and records what it was sent
on ``TwilioRestState`` for the test to inspect.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Any, Final

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from quart import Blueprint, Response, jsonify, request
from quart_trio import QuartTrio

from archer.twilio.twiml import MAX_INLINE_TWIML_CHARS

__all__ = [
    "CallUpdate",
    "EmulatedCall",
    "EmulatedRecording",
    "TwilioRestState",
    "serve_twilio_rest",
    "twilio_rest_app",
]

API_VERSION: Final = "2010-04-01"
#: A call update is a few form fields; inline TwiML is at most 4000 characters of them.
MAX_REQUEST_BYTES: Final = 64 * 1024

IN_PROGRESS: Final = "in-progress"
COMPLETED: Final = "completed"


@attrs.frozen
class CallUpdate:
    """One accepted update: the form fields exactly as Archer posted them."""

    call_sid: str
    fields: dict[str, str]
    received_at: datetime


@attrs.define
class EmulatedCall:
    """A call as the emulator knows it; Twilio's ``status`` values."""

    sid: str
    from_number: str
    to_number: str
    started_at: datetime
    status: str = IN_PROGRESS
    ended_at: datetime | None = None
    updated_at: datetime | None = None
    #: The number of the last ``<Dial>`` sent in a ``Twiml`` update, if any.
    transferred_to: str | None = None
    #: The call's recording, once one was started (``TwilioRestState.start_recording``).
    recording: EmulatedRecording | None = None


@attrs.define
class EmulatedRecording:
    """A call recording (Twilio's Recording resource): ``in-progress``, ``paused``, ``stopped``.

    ``changes`` lists every accepted status change as ``(status, PauseBehavior or "")``.
    """

    sid: str
    started_at: datetime
    channels: int = 2
    status: str = IN_PROGRESS
    changes: list[tuple[str, str]] = attrs.Factory(list)


@attrs.define
class TwilioRestState:
    """What the emulator serves: one account, its live calls, and the updates received."""

    account_sid: str
    auth_token: str = attrs.field(repr=False)
    calls: dict[str, EmulatedCall] = attrs.Factory(dict)
    updates: list[CallUpdate] = attrs.Factory(list)
    #: Recording updates (pause, resume, stop), as posted; not call updates.
    recording_updates: list[CallUpdate] = attrs.Factory(list)
    _arrived: trio.Event = attrs.field(factory=trio.Event, repr=False)

    def add_call(
        self, call_sid: str, *, from_number: str = "+15005550006", to_number: str = "+15005550001"
    ) -> EmulatedCall:
        """Make ``call_sid`` a live (in-progress) call."""
        call = EmulatedCall(call_sid, from_number, to_number, started_at=_now())
        self.calls[call_sid] = call
        return call

    def start_recording(self, call_sid: str, *, channels: int = 2) -> EmulatedRecording:
        """The call's ``<Start><Recording>`` ran: a recording is in progress (``KeyError`` if
        the call was never added)."""
        recording = EmulatedRecording("RE" + secrets.token_hex(16), _now(), channels)
        self.calls[call_sid].recording = recording
        return recording

    def end_call(self, call_sid: str) -> None:
        """The caller hung up: the call is over (``KeyError`` if it was never added)."""
        _complete(self.calls[call_sid])

    async def wait_for_updates(self, n: int) -> list[CallUpdate]:
        """Every update so far, once there are at least ``n``; wrap it in ``fail_after``.

        Cancellation: nothing to undo.
        """
        await trio.lowlevel.checkpoint()
        while len(self.updates) < n:
            await self._arrived.wait()
        return list(self.updates)

    def _record(self, update: CallUpdate) -> None:
        self.updates.append(update)
        self._arrived.set()
        self._arrived = trio.Event()


def twilio_rest_app(state: TwilioRestState) -> QuartTrio:
    """The ASGI app serving the call-update route against ``state``."""
    app = QuartTrio("archer-twilio-rest-emulator")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.register_blueprint(_calls_blueprint(state))
    app.register_blueprint(_recordings_blueprint(state))
    return app


# hypercorn's serve reports readiness through a task_status of its own; this one hands on a URL.
async def serve_twilio_rest(  # noqa: ASYNC128
    state: TwilioRestState,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the emulator until cancelled; reports its base URL (``http://HOST:PORT``).

    Cancellation: stops serving at once.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # Through the root logger like Archer's own lines: hypercorn's default handler on top of
    # it printed every line ("Running on …") twice.
    config.errorlog = logging.getLogger("hypercorn.error")
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                hypercorn_serve,
                twilio_rest_app(state),
                config,
                shutdown_trigger=trio.sleep_forever,
            )
        )
        task_status.started(binds[0])


def _calls_blueprint(state: TwilioRestState) -> Blueprint:
    blueprint = Blueprint("twilio_rest", __name__)

    @blueprint.post(f"/{API_VERSION}/Accounts/<account_sid>/Calls/<call_sid>.json")
    async def update_call(account_sid: str, call_sid: str) -> Response:
        refused = _unauthenticated(state)
        if refused is not None:
            return refused
        call = state.calls.get(call_sid)
        if account_sid != state.account_sid or call is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        fields = {name: value for name, value in (await request.form).items()}
        if "Twiml" in fields and "Url" in fields:
            return _error(400, None, "Twiml and Url are mutually exclusive")
        twiml = fields.get("Twiml")
        dialled: str | None = None
        if twiml is not None:
            if len(twiml) > MAX_INLINE_TWIML_CHARS:
                return _error(400, 32018, f"Twiml exceeds {MAX_INLINE_TWIML_CHARS} characters")
            try:
                dialled = _dialled_number(twiml)
            except ET.ParseError:
                return _error(400, 12100, "Document parse failure")
        if call.status != IN_PROGRESS:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        state._record(CallUpdate(call_sid, fields, received_at=_now()))
        call.updated_at = _now()
        if fields.get("Status") == COMPLETED:
            _complete(call)
        elif dialled is not None:
            call.transferred_to = dialled
        return jsonify(_call_resource(state.account_sid, call))

    return blueprint


#: ``Status`` values the Recording resource's update accepts, and ``PauseBehavior`` values.
_RECORDING_STATUSES: Final = frozenset({"in-progress", "paused", "stopped"})
_PAUSE_BEHAVIORS: Final = frozenset({"skip", "silence"})
#: A recording Twilio.CURRENT can still name: one in progress or paused (not stopped, not
#: ended with its call).
_LIVE_RECORDING: Final = frozenset({"in-progress", "paused"})


def _recordings_blueprint(state: TwilioRestState) -> Blueprint:
    """``POST …/Calls/{CallSid}/Recordings/{Sid}.json`` as Twilio's API reference describes the
    Call Recording update: ``Sid`` is the recording's SID or ``Twilio.CURRENT`` (the call's
    recording in progress or paused); ``Status`` is ``in-progress``, ``paused`` or ``stopped``;
    ``PauseBehavior`` (``skip`` or ``silence``, default ``silence``) goes with a pause. A call
    with no such recording (never started, stopped, or ended with its call) answers 404 (code
    20404); a bad field 400 (code 21220 for a call or
    recording that is over is not claimed: none is invented)."""
    blueprint = Blueprint("twilio_rest_recordings", __name__)

    @blueprint.post(
        f"/{API_VERSION}/Accounts/<account_sid>/Calls/<call_sid>/Recordings/<recording_sid>.json"
    )
    async def update_recording(account_sid: str, call_sid: str, recording_sid: str) -> Response:
        refused = _unauthenticated(state)
        if refused is not None:
            return refused
        # The whole request is read first, so a refusal leaves the kept-alive connection clean.
        fields = {name: value for name, value in (await request.form).items()}
        call = state.calls.get(call_sid)
        recording = None if call is None else call.recording
        if (
            account_sid != state.account_sid
            or recording is None
            or recording.status not in _LIVE_RECORDING
            or recording_sid not in ("Twilio.CURRENT", recording.sid)
        ):
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        status = fields.get("Status", "")
        behavior = fields.get("PauseBehavior", "")
        if status not in _RECORDING_STATUSES or (behavior and behavior not in _PAUSE_BEHAVIORS):
            return _error(400, None, f"Invalid Status or PauseBehavior: {status!r} {behavior!r}")
        # Kept apart from call updates: a recording change does not move the call.
        state.recording_updates.append(CallUpdate(call_sid, fields, received_at=_now()))
        recording.status = status
        recording.changes.append((status, behavior))
        return jsonify(_recording_resource(state.account_sid, call_sid, recording))

    return blueprint


def _recording_resource(
    account_sid: str, call_sid: str, recording: EmulatedRecording
) -> dict[str, Any]:
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "call_sid": call_sid,
        "conference_sid": None,
        "date_created": _rfc2822(recording.started_at),
        "date_updated": _rfc2822(_now()),
        "start_time": _rfc2822(recording.started_at),
        "duration": None,
        "sid": recording.sid,
        "price": None,
        "price_unit": "USD",
        "status": recording.status,
        "channels": recording.channels,
        "source": "StartCallRecordingTwiML",
        "error_code": None,
        "track": "both",
        "encryption_details": None,
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}/Recordings/"
        f"{recording.sid}.json",
    }


def _unauthenticated(state: TwilioRestState) -> Response | None:
    """Twilio's 401 (code 20003) unless the request's Basic auth is the account's; every route
    checks this first."""
    auth = request.authorization
    if (
        auth is None
        or auth.type != "basic"
        or not _same(auth.username, state.account_sid)
        or not _same(auth.password, state.auth_token)
    ):
        response = _error(401, 20003, "Authenticate")
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response
    return None


def _dialled_number(twiml: str) -> str | None:
    """The number of the document's ``<Dial>`` (text or ``<Number>``), if it has one."""
    root = ET.fromstring(twiml)
    dial = root.find("Dial")
    if dial is None:
        return None
    number = dial.find("Number")
    text = number.text if number is not None else dial.text
    return (text or "").strip()


def _complete(call: EmulatedCall) -> None:
    if call.status != COMPLETED:
        call.status = COMPLETED
        call.ended_at = call.updated_at = _now()
        if call.recording is not None and call.recording.status in _LIVE_RECORDING:
            # The recording ends with its call; Twilio then processes it.
            call.recording.status = "completed"


def _call_resource(account_sid: str, call: EmulatedCall) -> dict[str, Any]:
    """The call as Twilio's JSON call resource (``CallInstance`` reads these keys)."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call.sid}"
    duration = (
        str(int((call.ended_at - call.started_at).total_seconds()))
        if call.ended_at is not None
        else None
    )
    return {
        "sid": call.sid,
        "account_sid": account_sid,
        "parent_call_sid": None,
        "to": call.to_number,
        "to_formatted": call.to_number,
        "from": call.from_number,
        "from_formatted": call.from_number,
        "phone_number_sid": None,
        "status": call.status,
        "start_time": _rfc2822(call.started_at),
        "end_time": _rfc2822(call.ended_at),
        "duration": duration,
        "price": None,
        "price_unit": "USD",
        "direction": "inbound",
        "answered_by": None,
        "api_version": API_VERSION,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": "0",
        "stir_verstat": None,
        "trunk_sid": None,
        "annotation": None,
        "date_created": _rfc2822(call.started_at),
        "date_updated": _rfc2822(call.updated_at or call.started_at),
        "uri": f"{uri}.json",
        "subresource_uris": {
            name: f"{uri}/{name.title().replace('_', '')}.json"
            for name in ("notifications", "recordings", "payments", "events", "streams")
        },
    }


def _error(status: int, code: int | None, message: str) -> Response:
    body: dict[str, Any] = {"message": message, "status": status}
    if code is not None:
        body["code"] = code
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    response = jsonify(body)
    response.status_code = status
    return response


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment) if moment is not None else None


def _now() -> datetime:
    return datetime.now(UTC)
