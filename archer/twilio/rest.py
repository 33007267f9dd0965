"""The ``TelephonyControl`` port on Twilio's REST API: transfer and hang up a live call.

Layer: telephony adapter. The async methods are the trio side; each hands exactly one call
update (one HTTP request) to a worker thread running twilio-python's blocking ``Client``.

Rules:

- twilio-python's async client is aiohttp (asyncio only), so the blocking one runs in a worker
  thread, gated by this adapter's own small ``trio.CapacityLimiter`` so a burst of transfers
  never starves trio's default thread pool (the database's threads live there too).
- Threads are never abandoned on cancellation: a transfer the caller gave up on could still
  move the call after Archer decided it failed. Cancellation takes effect when the request
  returns, and the HTTP timeout bounds how long that can be.
- Every ``TwilioException``, ``requests`` error and ``OSError`` becomes ``TelephonyError`` here;
  nothing above sees one. Hanging up a call that is already over (20404, 21220, HTTP 404) is
  success: the caller beat us to it.
- The auth token is never logged: it is not in ``repr``, twilio's request logger is held at
  WARNING (it logs URLs and headers at INFO), and transfer numbers are masked to four digits.

Reference: ../shared/reference/twilio-media-streams.md §5.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Final, Self

import attrs
import requests
import structlog
import trio
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from archer.call.outbound import STATUS_EVENTS
from archer.errors import TelephonyError
from archer.logs import mask_phone
from archer.twilio import twiml

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from archer.call.outbound import OutgoingCall
    from archer.call.ports import CallPlacer, OutboundTelephony, TelephonyControl
    from archer.settings import Settings

__all__ = ["DEFAULT_API_BASE_URL", "TwilioRestControl"]

log = structlog.get_logger(__name__)

# twilio-python logs every request (method, URL, form fields) at INFO; the URL carries the
# account SID and the form a transfer number, neither of which belongs in Archer's logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)

DEFAULT_API_BASE_URL: Final = "https://api.twilio.com"
#: Seconds for each connect and each read of one request: trio cannot cancel the thread, so
#: this is how long a cancelled transfer or hang-up can keep its caller waiting.
DEFAULT_TIMEOUT: Final = 10.0
#: Not os.environ: TWILIO_EDGE or TWILIO_REGION there would rewrite the REST host behind the
#: settings' back (even the emulator's), and credentials come from Archer's settings only; the
#: host is TWILIO_API_BASE_URL and nothing else. twilio's client reads ``environment or
#: os.environ``, so an empty mapping would mean os.environ: this one is not empty and names none
#: of the variables it looks for.
_NO_PROCESS_ENVIRONMENT: Final = {"ARCHER_TWILIO_ENVIRONMENT": "settings only"}
#: Concurrent REST requests per adapter; a call makes at most one or two in its life.
MAX_CONCURRENT_REQUESTS: Final = 4
#: Twilio's answers for "that call is over": unknown resource, and call not in progress.
_CALL_OVER_CODES: Final = frozenset({20404, 21220})
#: A call SID goes into the request path; anything but letters and digits could redirect it.
_SID: Final = re.compile(r"[A-Za-z0-9]{1,64}")


@attrs.frozen(kw_only=True)
class TwilioRestControl:
    """``TelephonyControl`` on Twilio's REST API, one twilio ``Client`` per adapter.

    Build it with ``TwilioRestControl.from_settings(settings)`` (or the fields directly), and
    call ``close()`` at shutdown to release its pooled connections.
    """

    account_sid: str
    auth_token: str = attrs.field(repr=False)
    #: Where the REST API lives; an emulator's ``http://127.0.0.1:PORT`` in tests and the demo.
    api_base_url: str = DEFAULT_API_BASE_URL
    timeout: float = DEFAULT_TIMEOUT
    #: Told ``(operation, outcome)`` after every request: ok, call_over, refused or error.
    observe: Callable[[str, str], None] | None = attrs.field(default=None, repr=False)
    _client: Any = attrs.field(init=False, repr=False)
    _limiter: trio.CapacityLimiter = attrs.field(
        init=False, repr=False, factory=lambda: trio.CapacityLimiter(MAX_CONCURRENT_REQUESTS)
    )

    @_client.default
    def _make_client(self) -> Any:
        client = Client(
            self.account_sid,
            self.auth_token,
            http_client=TwilioHttpClient(timeout=self.timeout),
            environment=_NO_PROCESS_ENVIRONMENT,
        )
        # The Api domain joins this with each path (``Domain.absolute_url``); the attribute is
        # read per request, so setting it once aims every call update at this base URL.
        client.api.base_url = self.api_base_url.rstrip("/")
        return client

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """An adapter with the account, token and API base URL from ``settings``."""
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            api_base_url=settings.twilio_api_base_url,
            timeout=timeout,
        )

    def close(self) -> None:
        """Close the pooled HTTP connections (at shutdown, with no request in flight)."""
        session = self._client.http_client.session
        if session is not None:
            session.close()

    # --- TelephonyControl -----------------------------------------------------------------

    async def transfer(self, call_sid: str, number: str) -> None:
        """Move the live call to ``number`` (E.164, or a SIP URI) with inline ``<Dial>`` TwiML.

        Twilio abandons the running ``<Connect><Stream>``, so the media stream ends.

        Raises:
            TelephonyError: ``number`` is neither E.164 nor a SIP URI, or ``call_sid`` is
                malformed (nothing is sent), or Twilio refused (e.g. code 21220: the call is no
                longer in progress) or could not be reached.

        Cancellation: takes effect once the request returns (at most ``timeout`` per connect
        and read); the transfer may have happened anyway.
        """
        try:
            document = twiml.dial(number)
        except ValueError as exc:
            raise TelephonyError(f"transfer refused before sending: {exc}") from exc
        try:
            status = await self._update("transfer", call_sid, {"twiml": document})
        except TelephonyError as exc:
            log.warning(
                "twilio.transfer_failed",
                call_sid=call_sid,
                to=mask_phone(number),
                code=exc.code,
                status=exc.status,
                error=str(exc),
            )
            raise
        log.info(
            "twilio.call_transferred", call_sid=call_sid, to=mask_phone(number), call_status=status
        )

    async def hang_up(self, call_sid: str) -> None:
        """End the call (``Status=completed``); a call that is already over is not an error.

        Raises:
            TelephonyError: ``call_sid`` is malformed, or Twilio refused for any reason but
                the call being over, or could not be reached.

        Cancellation: takes effect once the request returns (at most ``timeout`` per connect
        and read); the call may have been ended anyway.
        """
        try:
            status = await self._update("hang_up", call_sid, {"status": "completed"})
        except TelephonyError as exc:
            if exc.code in _CALL_OVER_CODES or exc.status == 404:
                log.info("twilio.call_hung_up", call_sid=call_sid, already_over=True, code=exc.code)
                return
            log.warning(
                "twilio.hang_up_failed",
                call_sid=call_sid,
                code=exc.code,
                status=exc.status,
                error=str(exc),
            )
            raise
        log.info("twilio.call_hung_up", call_sid=call_sid, already_over=False, call_status=status)

    # --- CallPlacer (outbound calls, issue 22) --------------------------------------------

    async def place_call(self, call: OutgoingCall) -> str:
        """Ask Twilio's Calls API to ring ``call.to``; the new call's SID.

        Answering-machine detection runs asynchronously (``MachineDetection=DetectMessageEnd``,
        ``AsyncAmd=true``) so the callee is connected at once and the verdict arrives at
        ``call.amd_callback`` later.

        Raises:
            TelephonyError: Twilio refused (a bad number, the account's limits) or could not be
                reached; whether a call was placed after a timeout is unknown.

        Cancellation: takes effect once the request returns (at most ``timeout`` per connect
        and read); the call may have been placed anyway.
        """
        try:
            sid = await trio.to_thread.run_sync(self._create_sync, call, limiter=self._limiter)
        except TwilioRestException as exc:
            self._observe("place_call", "refused")
            raise TelephonyError(
                f"place_call refused by Twilio: {exc.msg}", code=exc.code, status=exc.status
            ) from exc
        except (TwilioException, requests.RequestException, OSError) as exc:
            self._observe("place_call", "error")
            raise TelephonyError(
                f"place_call failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        self._observe("place_call", "ok")
        log.info("twilio.call_placed", call_sid=sid, to=mask_phone(call.to))
        return sid

    async def leave_voicemail(self, call_sid: str, message: str) -> None:
        """Replace the live call's TwiML with ``<Say>message</Say><Hangup/>``.

        Twilio abandons the running ``<Connect><Stream>`` (the media stream ends, and with it
        the agent session), says the message into the answering machine, and hangs up.

        Raises:
            TelephonyError: the message is empty or too long (nothing is sent), the call SID is
                malformed, or Twilio refused (the call is over) or could not be reached.

        Cancellation: takes effect once the request returns; the update may have happened.
        """
        try:
            document = twiml.apology(message)
        except ValueError as exc:
            raise TelephonyError(f"voicemail refused before sending: {exc}") from exc
        status = await self._update("voicemail", call_sid, {"twiml": document})
        log.info("twilio.voicemail_left", call_sid=call_sid, call_status=status)

    def _create_sync(self, call: OutgoingCall) -> str:
        created = self._client.calls.create(
            to=call.to,
            from_=call.from_number,
            url=call.answer_url,
            method="POST",
            status_callback=call.status_callback,
            status_callback_method="POST",
            status_callback_event=list(STATUS_EVENTS),
            timeout=call.ring_timeout,
            machine_detection="DetectMessageEnd",
            async_amd="true",
            async_amd_status_callback=call.amd_callback,
            async_amd_status_callback_method="POST",
        )
        return str(created.sid)

    async def set_recording(
        self, call_sid: str, *, paused: bool, pause_behavior: str
    ) -> str | None:
        """Pause or resume the call's recording (issue 21): ``POST
        /2010-04-01/Accounts/{Sid}/Calls/{CallSid}/Recordings/Twilio.CURRENT.json`` with
        ``Status=paused`` (and ``PauseBehavior``: ``skip`` or ``silence``) or
        ``Status=in-progress``. ``Twilio.CURRENT`` names the call's recording in progress, so no
        recording SID is needed; the one Twilio's answer names is returned (None if none).

        Raises:
            TelephonyError: ``call_sid`` is malformed, or Twilio refused (no recording in
                progress, the call is over) or could not be reached.

        Cancellation: takes effect once the request returns; the change may have happened.
        """
        operation = "pause_recording" if paused else "resume_recording"
        fields = {"status": "paused", "pause_behavior": pause_behavior} if paused else {}
        if not paused:
            fields = {"status": "in-progress"}
        try:
            answer = await self._update(operation, call_sid, fields, sync=self._recording_sync)
        except TelephonyError as exc:
            log.warning(
                f"twilio.{operation}_failed",
                call_sid=call_sid,
                code=exc.code,
                status=exc.status,
                error=str(exc),
            )
            raise
        log.info(f"twilio.{operation}", call_sid=call_sid, recording_sid=answer or None)
        return answer or None

    # --- the boundary ---------------------------------------------------------------------

    async def _update(
        self,
        operation: str,
        call_sid: str,
        fields: Mapping[str, str],
        *,
        sync: Callable[[str, Mapping[str, str]], str] | None = None,
    ) -> str:
        """POST one update in a worker thread (``sync``, by default a call update); what
        ``sync`` answers (the call's status after it, by default)."""
        if not _SID.fullmatch(call_sid):
            raise TelephonyError(f"{operation} refused before sending: malformed call SID")
        try:
            status = await trio.to_thread.run_sync(
                sync or self._update_sync, call_sid, fields, limiter=self._limiter
            )
        except TwilioRestException as exc:
            self._observe(operation, _refusal(operation, exc.code, exc.status))
            raise TelephonyError(
                f"{operation} refused by Twilio: {exc.msg}", code=exc.code, status=exc.status
            ) from exc
        except TwilioServiceException as exc:
            self._observe(operation, _refusal(operation, exc.code, exc.status))
            raise TelephonyError(
                f"{operation} refused by Twilio: {exc.title}", code=exc.code, status=exc.status
            ) from exc
        except (TwilioException, requests.RequestException, OSError) as exc:
            self._observe(operation, "error")
            raise TelephonyError(
                f"{operation} failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        self._observe(operation, "ok")
        return status

    def _observe(self, operation: str, outcome: str) -> None:
        if self.observe is not None:
            self.observe(operation, outcome)

    def _update_sync(self, call_sid: str, fields: Mapping[str, str]) -> str:
        # Runs in a worker thread: touches only the client, which nothing on the trio side
        # mutates (urllib3's connection pool is thread-safe; twilio needs no cookies).
        call = self._client.calls(call_sid).update(**fields)
        return str(call.status)

    def _recording_sync(self, call_sid: str, fields: Mapping[str, str]) -> str:
        # As ``_update_sync``: a worker thread, the client only.
        # Answers the recording's SID ("" if Twilio named none); its status is logged here.
        recording = self._client.calls(call_sid).recordings("Twilio.CURRENT").update(**fields)
        log.debug("twilio.recording_updated", recording_status=recording.status)
        return str(recording.sid or "")


def _refusal(operation: str, code: int | None, status: int | None) -> str:
    """How a refusal counts: a hang-up of a call already over is not a failure."""
    if operation == "hang_up" and (code in _CALL_OVER_CODES or status == 404):
        return "call_over"
    return "refused"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no message"


if TYPE_CHECKING:

    def _implements_the_port(control: TwilioRestControl) -> TelephonyControl:
        # mypy proves here that TwilioRestControl satisfies the TelephonyControl protocol.
        return control

    def _places_calls(control: TwilioRestControl) -> CallPlacer:
        return control

    def _serves_the_outbound_webhooks(control: TwilioRestControl) -> OutboundTelephony:
        return control
