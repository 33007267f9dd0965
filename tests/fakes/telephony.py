"""``FakeTelephony``: Twilio's REST call control as a list of requests (``TelephonyControl``)."""

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

    async def transfer(self, call_sid: str, number: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        self.requests.append(("transfer", call_sid, number))

    async def hang_up(self, call_sid: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        self.requests.append(("hang_up", call_sid, ""))

    async def set_recording(
        self, call_sid: str, *, paused: bool, pause_behavior: str
    ) -> str | None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        self.requests.append(("pause" if paused else "resume", call_sid, pause_behavior))
        return self.recording_sid
