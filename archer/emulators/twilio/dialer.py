"""An emulator of Twilio's Calls API create request and of the callee it rings, for tests.

Layer: emulator (quart-trio on hypercorn; speaks Twilio's side from Twilio's API reference,
never through Archer's client). It is the REST emulator (``archer.emulators.twilio.rest``) plus
one route, ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``:

- HTTP Basic auth as the REST emulator checks it (401, code 20003).
- ``To`` and ``From`` are required (400, codes 21201 and 21213), and one of ``Url``, ``Twiml``
  or ``ApplicationSid`` (400; the code is not verified, so none is invented).
- The answer is 201 with the new call resource (``status`` queued, ``direction`` outbound-api);
  every request is recorded (``DialerState.created``, with the emulator's arrival time) for the
  test to inspect.

Then the callee plays its part from ``DialerState.callees`` (one entry per created call, in
order; ``no-answer`` when the script runs out):

- ``no-answer`` / ``busy``: rings, then the final status callback says so.
- ``human``: answers: the TwiML is fetched from ``Url`` with a signed POST, the ``answered``
  status callback and the AMD verdict (``AnsweredBy=human``) follow. With a
  ``DialerState.callee_script``, the TwiML's ``<Connect><Stream>`` is run as the inbound
  emulated caller runs it (``archer.emulators.twilio.stream.StreamLeg``: the signed upgrade,
  ``connected``/``start`` with the TwiML's parameters, 20 ms media, ``dtmf`` keys, marks, all
  written by the emulator's own frames from Twilio's document) while the status and AMD
  callbacks go out, and the callee plays the script (keys its PIN, speaks) until the stream
  ends; the leg is kept in ``DialerState.streams``. Without a script it hangs up after
  ``hold_seconds``, no stream opened.
- ``machine``: answers as a voicemail greeting ending in a beep: as ``human``, but the verdict is
  ``machine_end_beep``, and it waits for the call's TwiML to be replaced by a REST update (the
  voicemail), then the call completes.

Status callbacks go to ``StatusCallback`` for the events in ``StatusCallbackEvent`` (``completed``
always), the verdict to ``AsyncAmdStatusCallback`` when ``AsyncAmd=true``; every one is signed
with the account's auth token as Twilio signs (``X-Twilio-Signature`` of the URL and form). A
callback that cannot be delivered is recorded in ``DialerState.undelivered`` and the call goes on,
as Twilio's does. A REST update of a streaming call (Archer hanging up) ends its stream, as on
Twilio.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable
from functools import partial
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from quart import Blueprint, Response, current_app, jsonify, request
from quart_trio import QuartTrio

from archer.audio.clips import speech_clip
from archer.emulators.http import HttpResponse, post_form
from archer.emulators.twilio.outcome import new_stream_sid
from archer.emulators.twilio.rest import (
    API_VERSION,
    TwilioRestState,
    _call_resource,
    _error,
    _unauthenticated,
    twilio_rest_app,
)
from archer.emulators.twilio.script import CallerScript
from archer.emulators.twilio.stream import StreamLeg
from archer.emulators.twilio.twiml import StreamPlan, read_voice_answer
from archer.twilio.signature import SignatureChecker

__all__ = ["CALLEES", "CreatedCall", "DialerState", "dialer_app", "serve_twilio_dialer"]

log = logging.getLogger(__name__)

#: What the emulated callee does when rung.
CALLEES: Final = ("no-answer", "busy", "human", "machine")
#: How long the emulated callee waits for the voicemail's REST update before hanging up.
VOICEMAIL_WAIT_SECONDS: Final = 10.0


@attrs.frozen
class CreatedCall:
    """One accepted Calls API create request: its fields as sent (repeated ones as lists)."""

    sid: str
    fields: dict[str, list[str]]
    #: ``trio.current_time()`` when the request arrived (spacing is measured on it).
    arrived_at: float

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


@attrs.define
class DialerState:
    """The REST emulator's state, the callee script, and what was created and delivered."""

    rest: TwilioRestState
    callees: list[str] = attrs.Factory(list)
    created: list[CreatedCall] = attrs.Factory(list)
    #: Signed callbacks delivered: (kind, url, form fields, HTTP status of Archer's answer).
    delivered: list[tuple[str, str, dict[str, str], int]] = attrs.Factory(list)
    undelivered: list[tuple[str, str]] = attrs.Factory(list)
    #: TwiML documents Archer answered the answer fetch with, by CallSid.
    answers: dict[str, str] = attrs.Factory(dict)
    ring_seconds: float = 0.05
    amd_seconds: float = 0.05
    hold_seconds: float = 0.2
    #: What a ``human`` callee does on the media stream; None: no stream is opened.
    callee_script: CallerScript | None = None
    #: The audio of each ``say`` clip of the callee's script (8 kHz μ-law).
    clips: Callable[[str], bytes] = speech_clip
    #: Called with one human-readable line per step and per event of a streaming callee.
    progress: Callable[[str], None] | None = None
    #: Every media stream a callee ran, by CallSid (what it heard, keyed, how it ended).
    streams: dict[str, StreamLeg] = attrs.Factory(dict)
    _script: itertools.count[int] = attrs.field(factory=itertools.count, repr=False)

    def next_callee(self) -> str:
        index = next(self._script)
        return self.callees[index] if index < len(self.callees) else "no-answer"


def dialer_app(state: DialerState) -> QuartTrio:
    """The REST emulator's app with the Calls API create route added."""
    app = twilio_rest_app(state.rest)
    app.register_blueprint(_create_blueprint(state))
    return app


# hypercorn's serve reports readiness through a task_status of its own; this one hands on a URL.
async def serve_twilio_dialer(  # noqa: ASYNC128
    state: DialerState,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the emulator until cancelled; reports its base URL (``http://HOST:PORT``).

    Cancellation: stops serving at once; callees still playing are abandoned.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn_serve, dialer_app(state), config, shutdown_trigger=trio.sleep_forever)
        )
        task_status.started(binds[0])


def _create_blueprint(state: DialerState) -> Blueprint:
    blueprint = Blueprint("twilio_calls_create", __name__)

    @blueprint.post(f"/{API_VERSION}/Accounts/<account_sid>/Calls.json")
    async def create_call(account_sid: str) -> Response:
        refused = _unauthenticated(state.rest)
        if refused is not None:
            return refused
        if account_sid != state.rest.account_sid:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        form = await request.form
        fields = {name: form.getlist(name) for name in form}
        if not form.get("To"):
            return _error(400, 21201, "No 'To' number is specified")
        if not form.get("From"):
            return _error(400, 21213, "No 'From' number is specified")
        if not any(form.get(name) for name in ("Url", "Twiml", "ApplicationSid")):
            return _error(400, None, "Either Url, Twiml or ApplicationSid must be specified")
        sid = "CA" + secrets.token_hex(16)
        created = CreatedCall(sid, fields, arrived_at=trio.current_time())
        state.created.append(created)
        call = state.rest.add_call(sid, from_number=form["From"], to_number=form["To"])
        resource = _call_resource(state.rest.account_sid, call)
        resource.update(status="queued", direction="outbound-api", start_time=None)
        current_app.add_background_task(_play_callee, state, created, state.next_callee())
        response = jsonify(resource)
        response.status_code = 201
        return response

    return blueprint


async def _play_callee(state: DialerState, created: CreatedCall, callee: str) -> None:
    """Ring, then answer (or not) as ``callee``, sending Twilio's signed callbacks."""
    base = {
        "AccountSid": state.rest.account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": created.sid,
        "Direction": "outbound-api",
        "From": created.field("From") or "",
        "To": created.field("To") or "",
    }
    events = set(created.fields.get("StatusCallbackEvent", [])) | {"completed"}

    async def status(event: str, call_status: str, **extra: str) -> None:
        url = created.field("StatusCallback")
        if url and event in events:
            await _deliver(state, "status", url, {**base, "CallStatus": call_status, **extra})

    await status("initiated", "queued")
    await trio.sleep(state.ring_seconds)
    await status("ringing", "ringing")
    await trio.sleep(state.ring_seconds)
    if callee in ("no-answer", "busy"):
        _end(state, created.sid, callee)
        await status("completed", callee, CallDuration="0")
        return
    url = created.field("Url")
    plan = None
    if url:
        answer = await _deliver(state, "answer", url, {**base, "CallStatus": "in-progress"})
        if answer is not None:
            state.answers[created.sid] = answer.text
            plan = read_voice_answer(answer)

    async def answered() -> None:
        await status("answered", "in-progress")
        amd_url = created.field("AsyncAmdStatusCallback")
        if created.field("AsyncAmd") == "true" and amd_url:
            await trio.sleep(state.amd_seconds)
            answered_by = "machine_end_beep" if callee == "machine" else "human"
            await _deliver(
                state,
                "amd",
                amd_url,
                {**base, "AnsweredBy": answered_by, "MachineDetectionDuration": "2100"},
            )

    if callee == "human" and state.callee_script is not None and isinstance(plan, StreamPlan):
        assert url is not None  # the plan came from fetching it
        # The stream connects at once; Twilio's callbacks and the AMD verdict arrive meanwhile.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answered)
            await _run_stream(state, created.sid, _origin(url), state.callee_script, plan)
        _end(state, created.sid, "completed")
        await status("completed", "completed", CallDuration="1")
        return
    await answered()
    if callee == "machine":
        with trio.move_on_after(VOICEMAIL_WAIT_SECONDS):
            seen = 0
            while True:
                updates = await state.rest.wait_for_updates(seen + 1)
                if any(u.call_sid == created.sid for u in updates[seen:]):
                    break
                seen = len(updates)
    else:
        await trio.sleep(state.hold_seconds)
    _end(state, created.sid, "completed")
    await status("completed", "completed", CallDuration="1")


def _end(state: DialerState, call_sid: str, status: str) -> None:
    call = state.rest.calls[call_sid]
    if call.status == "in-progress":
        call.status = status


async def _run_stream(
    state: DialerState, call_sid: str, archer_url: str, script: CallerScript, plan: StreamPlan
) -> None:
    """Run the answered call's media stream as the callee, until it ends."""
    tell = state.progress or (lambda line: None)
    clips = await trio.to_thread.run_sync(
        lambda: {name: state.clips(name) for name in script.clips}
    )
    leg = StreamLeg(
        archer_url=archer_url,
        account_sid=state.rest.account_sid,
        auth_token=state.rest.auth_token,
        call_sid=call_sid,
        stream_sid=new_stream_sid(),
        script=script,
        clips=clips,
        rest=state.rest,
        tell=tell,
        rest_seen=len(state.rest.updates),
    )
    state.streams[call_sid] = leg
    tell("the callee answers; Twilio connects the media stream")
    ended_by, detail = await leg.connect_and_run(plan)
    tell(f"the callee's stream ended ({ended_by}): {detail}")


def _origin(url: str) -> str:
    """The scheme and host of ``url``: where the stream is dialled (at the TwiML's path)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


async def _deliver(
    state: DialerState, kind: str, url: str, fields: dict[str, str]
) -> HttpResponse | None:
    """POST a signed form as Twilio does; Archer's answer (None: not delivered)."""
    signature = SignatureChecker(state.rest.auth_token).sign(url, fields)
    try:
        response = await post_form(url, fields, headers={"X-Twilio-Signature": signature})
    except (OSError, trio.TooSlowError, ValueError) as exc:
        state.undelivered.append((kind, url))
        log.warning("twilio emulator: %s callback to %s not delivered: %s", kind, url, exc)
        return None
    state.delivered.append((kind, url, fields, response.status))
    return response
