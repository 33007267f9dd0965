"""The Twilio emulator: one scripted caller phoning Archer, carried the way Twilio carries it.

Layer: emulator (trio I/O against an Archer at a plain ``http://`` address, usually loopback).
Product code: ``archer demo``, ``archer emulate call`` and the end-to-end tests use it.

What one ``EmulatedCaller.run()`` does (../shared/reference/twilio-media-streams.md §1, §3.5):

1. Posts the voice webhook with Twilio's parameters, signed over ``public_base_url`` +
   ``/twilio/voice``. Anything but HTTP 200 XML TwiML with ``<Connect><Stream>`` ends the call
   there (``rejected`` or ``no_stream``, the reason in ``detail``); ``archer.emulators.twilio.
   twiml`` reads the answer.
2. Hands the stream to a ``StreamLeg`` (``archer.emulators.twilio.stream``), which dials it,
   streams the caller's audio, plays what Archer sends and runs the script until the call ends.
3. Posts the signed status callback to ``/twilio/status``.

The caller's steps are a ``CallerScript`` (``archer.emulators.twilio.script``). The speech
comes from a clip source: ``archer.audio.clips.speech_clip`` unless one is given. When Archer
is to end or transfer calls over REST, the REST emulator's ``TwilioRestState``
(``archer.emulators.twilio.rest``) is shared with the caller.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final
from urllib.parse import urlsplit

import attrs
import trio

from archer.audio.clips import speech_clip
from archer.emulators.http import HttpResponse, post_form
from archer.emulators.twilio.outcome import CallOutcome, new_call_sid, new_stream_sid, reason
from archer.emulators.twilio.rest import TwilioRestState
from archer.emulators.twilio.script import CallerScript
from archer.emulators.twilio.stream import StreamLeg
from archer.emulators.twilio.twiml import NoStream, StreamPlan, read_voice_answer
from archer.twilio.signature import SignatureChecker, webhook_url

__all__ = ["API_VERSION", "STATUS_PATH", "VOICE_PATH", "ClipSource", "EmulatedCaller"]

VOICE_PATH: Final = "/twilio/voice"
STATUS_PATH: Final = "/twilio/status"
API_VERSION: Final = "2010-04-01"

#: Gives the 8 kHz μ-law audio of a named speech clip.
ClipSource = Callable[[str], bytes]


@attrs.define(kw_only=True)
class EmulatedCaller:
    """A caller on Twilio phoning the Archer at ``archer_url``; ``run()`` places the call."""

    #: Where Archer listens, plain http (``http://127.0.0.1:8000``).
    archer_url: str
    #: Archer's WEBHOOK_BASE_URL: what Twilio signs (``https://archer.example.com``).
    public_base_url: str
    account_sid: str
    auth_token: str = attrs.field(repr=False)
    script: CallerScript
    from_number: str = "+15555550101"
    to_number: str = "+15555550000"
    call_sid: str = attrs.Factory(new_call_sid)
    #: The REST emulator's state: Archer's REST updates of this call end it as Twilio would.
    rest: TwilioRestState | None = None
    #: Called with one human-readable line per step and per event ("caller says: …").
    progress: Callable[[str], None] | None = None
    #: The audio of each ``say`` clip (8 kHz μ-law).
    clips: ClipSource = speech_clip
    #: Called with every text message the caller sends on the stream (tests check them).
    on_send: Callable[[str], None] | None = None
    #: Each key the script presses is also its tone in the caller's audio, as from a phone
    #: that sends keys in band (Twilio's documents do not say whether its audio keeps them).
    in_band_tones: bool = False

    def webhook_fields(self) -> dict[str, str]:
        """The voice webhook's form fields (reference §1.2), as for a first, ringing request."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": self.from_number,
            "To": self.to_number,
            "Caller": self.from_number,
            "Called": self.to_number,
        }

    async def run(self) -> CallOutcome:
        """Place the call, play the script, and report how it went.

        One call per ``run``: it uses ``call_sid``, so a second call needs another caller
        (``attrs.evolve(caller, call_sid=new_call_sid())``).

        Raises:
            KeyError: the clip source has no clip the script says (``speech_clip``'s error;
                anything else it raises passes through too). Every clip is loaded, in a worker
                thread, before anything is dialled.

        Cancellation: the stream socket is closed (without ``stop``) and no status callback is
        posted; the REST emulator's call, if any, is left in progress.
        """
        clips = await trio.to_thread.run_sync(self._load_clips)
        started = trio.current_time()
        if self.rest is not None:
            self.rest.add_call(
                self.call_sid, from_number=self.from_number, to_number=self.to_number
            )
        leg = StreamLeg(
            archer_url=self.archer_url,
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            call_sid=self.call_sid,
            stream_sid=new_stream_sid(),
            script=self.script,
            clips=clips,
            rest=self.rest,
            tell=self._tell,
            on_send=self.on_send,
            rest_seen=len(self.rest.updates) if self.rest is not None else 0,
            in_band_tones=self.in_band_tones,
        )
        self._tell(f"caller {self.from_number} dials {self.to_number}")
        twiml = ""
        answer: StreamPlan | NoStream
        try:
            response = await self._post(VOICE_PATH, self.webhook_fields())
        except (OSError, trio.TooSlowError) as exc:
            answer = NoStream("rejected", f"11200: the voice webhook failed: {reason(exc)}")
        else:
            twiml = response.text
            answer = read_voice_answer(response)
        recording = recording_callback_path(twiml) if isinstance(answer, StreamPlan) else None
        if recording is not None:
            # <Start><Recording> runs before <Connect>: a recording is in progress (issue 21).
            recording_sid = "RE" + secrets.token_hex(16)
            if self.rest is not None:
                recording_sid = self.rest.start_recording(self.call_sid).sid
            self._tell("Twilio starts recording the call (two channels)")
            await self._post_recording(recording, recording_sid, "in-progress", None)
        if isinstance(answer, StreamPlan):
            self._tell("Archer answers; the caller is connected to the agent")
            ended_by, detail = await leg.connect_and_run(answer)
        else:
            ended_by, detail = answer.ended_by, answer.detail
            self._tell(f"the call ends: {detail}")
        duration = trio.current_time() - started
        if self.rest is not None:
            self.rest.end_call(self.call_sid)
        if recording is not None:
            await self._post_recording(recording, recording_sid, "completed", round(duration))
        callback_status = await self._post_status(duration)
        return CallOutcome(
            call_sid=self.call_sid,
            stream_sid=leg.stream_sid if leg.opened else None,
            twiml=twiml,
            heard=bytes(leg.heard),
            marks_echoed=list(leg.marks_echoed),
            clears_received=leg.clears_received,
            media_frames_received=leg.media_frames_received,
            dtmf_sent=leg.dtmf_sent,
            ended_by=ended_by,
            transferred_to=leg.transferred_to,
            duration_s=duration,
            invalid=list(leg.invalid),
            status_callback_status=callback_status,
            detail=detail,
            steps_done=leg.steps_done,
        )

    def _load_clips(self) -> dict[str, bytes]:
        return {name: self.clips(name) for name in self.script.clips}

    def _tell(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    async def _post(self, path: str, fields: dict[str, str]) -> HttpResponse:
        signature = SignatureChecker(self.auth_token).sign(
            webhook_url(self.public_base_url, path), fields
        )
        return await post_form(
            self.archer_url.rstrip("/") + path, fields, headers={"X-Twilio-Signature": signature}
        )

    async def _post_recording(
        self, path: str, recording_sid: str, status: str, duration: int | None
    ) -> None:
        """Twilio's recording status callback (``in-progress``, then ``completed``), signed."""
        fields = {
            "AccountSid": self.account_sid,
            "CallSid": self.call_sid,
            "RecordingSid": recording_sid,
            "RecordingStatus": status,
            "RecordingChannels": "2",
            "RecordingSource": "StartCallRecordingTwiML",
            "RecordingStartTime": format_datetime(datetime.now(UTC)),
            "RecordingTrack": "both",
        }
        if duration is not None:
            fields["RecordingDuration"] = str(duration)
            fields["RecordingUrl"] = (
                f"https://api.twilio.com/2010-04-01/Accounts/{self.account_sid}"
                f"/Recordings/{recording_sid}"
            )
        try:
            response = await self._post(path, fields)
        except (OSError, trio.TooSlowError) as exc:
            self._tell(f"the recording callback failed: {reason(exc)}")
            return
        if response.status != 200:
            self._tell(f"the recording callback was answered HTTP {response.status}")

    async def _post_status(self, duration: float) -> int | None:
        """Twilio's call status callback after the call (reference §1.4); its HTTP status."""
        fields = {
            **self.webhook_fields(),
            "CallStatus": "completed",
            "CallDuration": str(round(duration)),
            "Timestamp": format_datetime(datetime.now(UTC)),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        }
        try:
            response = await self._post(STATUS_PATH, fields)
        except (OSError, trio.TooSlowError) as exc:
            self._tell(f"the status callback failed: {reason(exc)}")
            return None
        return response.status


def recording_callback_path(twiml: str) -> str | None:
    """The path of ``<Start><Recording recordingStatusCallback>`` in ``twiml``, if it records."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return None
    recording = root.find("./Start/Recording")
    if recording is None:
        return None
    return urlsplit(recording.attrib.get("recordingStatusCallback", "")).path or None
