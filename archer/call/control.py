"""What a tool may do to the call it serves: wait for speech to be heard, capture keys, note a
recording pause or resume, end the call.

Layer: call. Handed to tools inside their ``ToolContext``; it is the only way a tool reaches the
call's nursery, and it exposes no more than these moves.

Rules: a tool that is about to end the call through Twilio (a transfer, a hang-up) first
``expect``s the outcome, because Twilio may stop the media stream before its REST answer comes
back; the call state then records the expected outcome rather than ``caller_hangup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from archer.call.events import ToolCallRequest
from archer.call.items import SendMark
from archer.call.keypad import open_capture

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime

    import trio

    from archer.call.items import DownlinkItem, UplinkItem
    from archer.call.playback import Playback
    from archer.call.records import CallStatus, RecordingAction
    from archer.call.state import CallState


@attrs.define
class CallControl:
    """The call's controls, as tools see them."""

    _call: CallState
    _playback: Playback
    _downlink: trio.MemorySendChannel[DownlinkItem]
    _scope: trio.CancelScope
    #: The caller → agent channel, on which keypad captures start and stop (None: no capture).
    _uplink: trio.MemorySendChannel[UplinkItem] | None = None
    #: The playback epoch when the agent made the request this control serves.
    _requested_in_epoch: int = 0
    #: End reasons this control records under another name (Archer's own fall-back transfer
    #: is ``agent_lost_transferred``, not ``transferred``; issue 16).
    _end_reasons: Mapping[str, str] = attrs.field(factory=dict)

    def for_request(self, epoch: int) -> CallControl:
        """The controls for one tool request the agent made during playback epoch ``epoch``."""
        return attrs.evolve(self, requested_in_epoch=epoch)

    def renaming(self, end_reasons: Mapping[str, str]) -> CallControl:
        """The same controls, recording each end reason in ``end_reasons`` under its value."""
        return attrs.evolve(self, end_reasons=end_reasons)

    async def wait_until_heard(self) -> bool:
        """Wait until the agent's queued speech has played.

        False if the caller interrupted at any point since the agent made the request — even
        before this was called — because then the lead-in was not heard.

        Cancellation: nothing is left behind but a mark Twilio will echo to nobody.
        """

        async def place_mark(name: str, epoch: int) -> None:
            await self._downlink.send(SendMark(name, epoch))

        return await self._playback.wait_until_heard(
            place_mark, since_epoch=self._requested_in_epoch
        )

    def interrupted(self) -> bool:
        """Whether the caller cut the agent off since the agent made the request."""
        return self._playback.epoch != self._requested_in_epoch

    def keypad_capture(
        self,
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[str] | None]:
        """Capture the caller's keys, withheld from the agent (``archer.call.keypad``).

        Raises:
            RuntimeError: this call has no uplink to capture from (a bug in the wiring).
        """
        if self._uplink is None:
            raise RuntimeError("keypad capture needs the call's uplink")
        return open_capture(self._uplink)

    def recording_changed(
        self,
        action: RecordingAction,
        *,
        requested_at: datetime,
        answered_at: datetime,
        accepted: bool,
        error_code: int | None = None,
        recording_sid: str | None = None,
    ) -> None:
        """Record a pause or resume of the call's recording and Twilio's answer (issue 21)."""
        self._call.recording_changed(
            action,
            requested_at=requested_at,
            answered_at=answered_at,
            accepted=accepted,
            error_code=error_code,
            recording_sid=recording_sid,
        )

    def expect(self, status: CallStatus, end_reason: str) -> None:
        """Announce how the call is about to end, before asking Twilio to end it."""
        self._call.expect(status, self._end_reasons.get(end_reason, end_reason))

    def withdraw(self) -> None:
        """Twilio refused: the call goes on and ends however it ends."""
        self._call.withdraw_expectation()

    def end(self, status: CallStatus, end_reason: str) -> None:
        """End the call now: record how, and cancel the call's tasks (this one included)."""
        end_reason = self._end_reasons.get(end_reason, end_reason)
        self._call.finish(status, end_reason)
        self._scope.cancel(reason=f"a tool ended the call ({end_reason})")


def transfer_request(target: str | None, ordinal: int) -> ToolCallRequest:
    """A Line agent's ``transfer_call`` as the tool request a Managed agent sends for a transfer.

    Both then take the same path: the ``transfer_to_human`` tool waits for the lead-in, checks the
    number against the allow-list and records the invocation. ``ordinal`` counts the call's
    transfers (1, 2, ...) so each gets its own ``tool_call_id``; Line expects no result.
    """
    return ToolCallRequest(
        tool_call_id=f"transfer_call-{ordinal}",
        name="transfer_to_human",
        arguments={"reason": "the agent asked (transfer_call)", "number": target},
        expects_response=False,
    )
