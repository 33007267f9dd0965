"""``FakeTelephony``: Twilio's REST call control as a list of requests (``TelephonyControl``).

It answers as Twilio does (``tests/contract/test_telephony_control.py`` runs one suite against
it and the real adapter on the REST emulator): a call in ``ended`` refuses a transfer (21220)
and a recording change (20404), and its hang-up is no error and no request; a call in
``unrecorded`` has no recording to pause or resume (20404).
"""

from __future__ import annotations

import attrs
import trio

from archer.errors import TelephonyError


@attrs.define
class FakeTelephony:
    requests: list[tuple[str, str, str]] = attrs.Factory(list)
    #: When set, every request fails with it (Twilio refused or was unreachable).
    failure: TelephonyError | None = None
    #: What ``set_recording`` answers: the recording Twilio acted on.
    recording_sid: str | None = None
    #: Calls that are over, and calls with no recording in progress.
    ended: set[str] = attrs.Factory(set)
    unrecorded: set[str] = attrs.Factory(set)

    async def transfer(self, call_sid: str, number: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        if call_sid in self.ended:
            raise TelephonyError(
                "Call is not in-progress. Cannot redirect.", code=21220, status=400
            )
        self.requests.append(("transfer", call_sid, number))

    async def hang_up(self, call_sid: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        if call_sid not in self.ended:
            self.requests.append(("hang_up", call_sid, ""))
            self.ended.add(call_sid)

    async def set_recording(
        self, call_sid: str, *, paused: bool, pause_behavior: str
    ) -> str | None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        if call_sid in self.ended or call_sid in self.unrecorded:
            raise TelephonyError("The requested resource was not found", code=20404, status=404)
        self.requests.append(("pause" if paused else "resume", call_sid, pause_behavior))
        return self.recording_sid
