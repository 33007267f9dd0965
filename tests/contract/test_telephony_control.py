"""Contract: ``TelephonyControl``, one suite against ``FakeTelephony`` and ``TwilioRestControl``.

Layer: contract tests. Transfers, hang-ups and keypad captures are tested against
``tests.fakes.telephony.FakeTelephony``; this suite proves the fake answers what the real
adapter (the real twilio library, over loopback, against the REST emulator written from
Twilio's API reference) answers, through the port alone: a live call is transferred, hung up
and its recording paused and resumed; a call that is over refuses a transfer (21220) and a
recording change (20404) and its hang-up is no error; a call with no recording has none to
pause (20404); a refusal leaves nothing done. "Done" is the fake's requests for the fake and
the emulator's accepted updates for the real adapter.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from functools import partial

import attrs
import pytest
import trio

from archer.call.ports import TelephonyControl
from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from archer.errors import TelephonyError
from archer.twilio.rest import TwilioRestControl
from tests.fakes.telephony import FakeTelephony

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "contract-auth-token-8d1e"
LIVE = "CA" + "1" * 32
ENDED = "CA" + "2" * 32
UNRECORDED = "CA" + "3" * 32
HUMAN = "+14155550100"
#: Loopback requests on a loaded CI machine still answer within this.
STEP_TIMEOUT = 10.0


@attrs.define
class Subject:
    control: TelephonyControl
    #: What Twilio accepted, in order: (operation, call SID, detail).
    done: Callable[[], list[tuple[str, str, str]]]


@pytest.fixture(params=["fake", "twilio_rest"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    """``LIVE`` recorded and in progress, ``ENDED`` over, ``UNRECORDED`` live with no recording."""
    if request.param == "fake":
        fake = FakeTelephony(ended={ENDED}, unrecorded={UNRECORDED})
        # A resume carries no pause behaviour to Twilio; the fake notes the one it was given.
        yield Subject(
            fake, lambda: [(op, sid, "" if op == "resume" else d) for op, sid, d in fake.requests]
        )
        return
    state = TwilioRestState(ACCOUNT_SID, AUTH_TOKEN)
    for call_sid in (LIVE, ENDED, UNRECORDED):
        state.add_call(call_sid)
    state.start_recording(LIVE)
    state.start_recording(ENDED)
    state.end_call(ENDED)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_twilio_rest, state))
        adapter = TwilioRestControl(
            account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_base_url=url
        )
        try:
            yield Subject(adapter, partial(_accepted, state))
        finally:
            adapter.close()
            nursery.cancel_scope.cancel()


def _accepted(state: TwilioRestState) -> list[tuple[str, str, str]]:
    """The emulator's accepted updates, in the fake's terms."""
    done = [
        (update.received_at, _call_update(update.call_sid, update.fields))
        for update in state.updates
    ]
    done += [
        (update.received_at, _recording_update(update.call_sid, update.fields))
        for update in state.recording_updates
    ]
    return [request for _, request in sorted(done, key=lambda pair: pair[0])]


def _call_update(call_sid: str, fields: dict[str, str]) -> tuple[str, str, str]:
    if fields.get("Status") == "completed":
        return ("hang_up", call_sid, "")
    dial = ET.fromstring(fields["Twiml"]).find("Dial")
    assert dial is not None, fields
    return ("transfer", call_sid, (dial.findtext("Number") or dial.text or "").strip())


def _recording_update(call_sid: str, fields: dict[str, str]) -> tuple[str, str, str]:
    if fields["Status"] == "paused":
        return ("pause", call_sid, fields["PauseBehavior"])
    return ("resume", call_sid, "")


async def test_a_live_call_is_paused_resumed_transferred_and_hung_up(subject: Subject) -> None:
    with trio.fail_after(STEP_TIMEOUT):
        await subject.control.set_recording(LIVE, paused=True, pause_behavior="skip")
        await subject.control.set_recording(LIVE, paused=False, pause_behavior="skip")
        await subject.control.transfer(LIVE, HUMAN)
        await subject.control.hang_up(LIVE)
    assert subject.done() == [
        ("pause", LIVE, "skip"),
        ("resume", LIVE, ""),
        ("transfer", LIVE, HUMAN),
        ("hang_up", LIVE, ""),
    ]


async def test_a_call_that_is_over_refuses_a_transfer_and_a_recording_change(
    subject: Subject,
) -> None:
    with trio.fail_after(STEP_TIMEOUT):
        with pytest.raises(TelephonyError) as transfer:
            await subject.control.transfer(ENDED, HUMAN)
        with pytest.raises(TelephonyError) as pause:
            await subject.control.set_recording(ENDED, paused=True, pause_behavior="skip")
    assert (transfer.value.code, transfer.value.status) == (21220, 400)
    assert (pause.value.code, pause.value.status) == (20404, 404)
    assert subject.done() == []


async def test_hanging_up_a_call_that_is_over_is_no_error_and_does_nothing(
    subject: Subject,
) -> None:
    with trio.fail_after(STEP_TIMEOUT):
        await subject.control.hang_up(ENDED)
        await subject.control.hang_up(LIVE)
        await subject.control.hang_up(LIVE)  # now over too
    assert subject.done() == [("hang_up", LIVE, "")]


async def test_a_call_with_no_recording_has_none_to_pause(subject: Subject) -> None:
    with trio.fail_after(STEP_TIMEOUT), pytest.raises(TelephonyError) as pause:
        await subject.control.set_recording(UNRECORDED, paused=True, pause_behavior="silence")
    assert (pause.value.code, pause.value.status) == (20404, 404)
    assert subject.done() == []
