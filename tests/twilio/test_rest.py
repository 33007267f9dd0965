"""``TwilioRestControl`` (the real twilio library) against the REST emulator over loopback.

Real clock, real sockets and real worker threads, so every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from functools import partial

import attrs
import pytest
import structlog
import trio

from archer.emulators.http import post_form
from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from archer.errors import TelephonyError
from archer.settings import Settings
from archer.twilio.rest import TwilioRestControl

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "emulated-auth-token-5f3a9c71"
CALL_SID = "CA" + "fedcba9876543210" * 2
HUMAN = "+14155550100"
#: Every request here is on loopback; a loaded CI machine still answers within this.
STEP_TIMEOUT = 10.0


@attrs.frozen
class Emulator:
    state: TwilioRestState
    url: str


@pytest.fixture
async def twilio() -> AsyncIterator[Emulator]:
    """The REST emulator on a free loopback port, with ``CALL_SID`` live."""
    state = TwilioRestState(ACCOUNT_SID, AUTH_TOKEN)
    state.add_call(CALL_SID)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_twilio_rest, state))
        yield Emulator(state, url)
        nursery.cancel_scope.cancel()


@pytest.fixture
def control(twilio: Emulator) -> Iterator[TwilioRestControl]:
    """The adapter aimed at the emulator with the right credentials."""
    adapter = TwilioRestControl(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_base_url=twilio.url
    )
    yield adapter
    adapter.close()


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def attempt(adapter: TwilioRestControl, operation: str) -> None:
    """Run one port method by name (``transfer`` to ``HUMAN`` or ``hang_up``) on ``CALL_SID``."""
    if operation == "transfer":
        await adapter.transfer(CALL_SID, HUMAN)
    else:
        await adapter.hang_up(CALL_SID)


def basic_auth(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_transfer_posts_dial_twiml_with_basic_auth(
    twilio: Emulator, control: TwilioRestControl
) -> None:
    """A transfer is one authenticated update whose Twiml dials the number."""
    with trio.fail_after(STEP_TIMEOUT):
        await control.transfer(CALL_SID, HUMAN)
        updates = await twilio.state.wait_for_updates(1)

    assert len(updates) == 1
    assert updates[0].call_sid == CALL_SID
    assert set(updates[0].fields) == {"Twiml"}
    root = ET.fromstring(updates[0].fields["Twiml"])
    assert root.tag == "Response"
    assert [(child.tag, child.text) for child in root] == [("Dial", HUMAN)]
    call = twilio.state.calls[CALL_SID]
    assert call.transferred_to == HUMAN
    assert call.status == "in-progress"


async def test_hang_up_completes_the_call(twilio: Emulator, control: TwilioRestControl) -> None:
    """A hang-up posts Status=completed and the call ends."""
    with trio.fail_after(STEP_TIMEOUT):
        await control.hang_up(CALL_SID)

    assert [update.fields for update in twilio.state.updates] == [{"Status": "completed"}]
    assert twilio.state.calls[CALL_SID].status == "completed"


async def test_hang_up_of_an_ended_call_is_not_an_error(
    twilio: Emulator, control: TwilioRestControl
) -> None:
    """Twilio's 21220 for a call the caller already ended counts as hung up, logged at info."""
    twilio.state.end_call(CALL_SID)
    with structlog.testing.capture_logs() as logs, trio.fail_after(STEP_TIMEOUT):
        await control.hang_up(CALL_SID)

    assert twilio.state.updates == []
    assert logs == [
        {
            "event": "twilio.call_hung_up",
            "log_level": "info",
            "call_sid": CALL_SID,
            "already_over": True,
            "code": 21220,
        }
    ]


async def test_hang_up_of_an_unknown_call_is_not_an_error(control: TwilioRestControl) -> None:
    """Twilio's 404/20404 for a call it does not know counts as hung up."""
    unknown = "CA" + "0" * 32
    with structlog.testing.capture_logs() as logs, trio.fail_after(STEP_TIMEOUT):
        await control.hang_up(unknown)

    assert [(line["event"], line["code"]) for line in logs] == [("twilio.call_hung_up", 20404)]


async def test_transfer_of_an_ended_call_raises_21220(
    twilio: Emulator, control: TwilioRestControl
) -> None:
    """A transfer of a call that is over is refused with Twilio's code and status."""
    twilio.state.end_call(CALL_SID)
    with (
        structlog.testing.capture_logs() as logs,
        trio.fail_after(STEP_TIMEOUT),
        pytest.raises(TelephonyError, match="not in-progress") as raised,
    ):
        await control.transfer(CALL_SID, HUMAN)

    assert (raised.value.code, raised.value.status) == (21220, 400)
    assert twilio.state.updates == []
    assert [line["event"] for line in logs] == ["twilio.transfer_failed"]
    assert logs[0]["log_level"] == "warning"


@pytest.mark.parametrize("operation", ["transfer", "hang_up"])
async def test_wrong_auth_token_raises_401(twilio: Emulator, operation: str) -> None:
    """Bad credentials are a TelephonyError with HTTP status 401 (code 20003), not a success."""
    adapter = TwilioRestControl(
        account_sid=ACCOUNT_SID, auth_token="not-the-token", api_base_url=twilio.url
    )
    try:
        with trio.fail_after(STEP_TIMEOUT), pytest.raises(TelephonyError) as raised:
            await attempt(adapter, operation)
    finally:
        adapter.close()

    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert twilio.state.updates == []
    assert twilio.state.calls[CALL_SID].status == "in-progress"


@pytest.mark.parametrize("operation", ["transfer", "hang_up"])
async def test_unreachable_api_raises_telephony_error(operation: str) -> None:
    """A base URL with nothing listening is a TelephonyError with no Twilio code or status."""
    adapter = TwilioRestControl(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        api_base_url=f"http://127.0.0.1:{closed_port()}",
        timeout=2.0,
    )
    try:
        with (
            trio.fail_after(STEP_TIMEOUT),
            pytest.raises(TelephonyError, match="ConnectionError") as raised,
        ):
            await attempt(adapter, operation)
    finally:
        adapter.close()

    assert (raised.value.code, raised.value.status) == (None, None)


async def test_bad_input_is_refused_before_sending(
    twilio: Emulator, control: TwilioRestControl
) -> None:
    """A non-E.164 number or a SID that could bend the URL path never reaches Twilio."""
    with trio.fail_after(STEP_TIMEOUT):
        with pytest.raises(TelephonyError, match=r"E\.164"):
            await control.transfer(CALL_SID, "0800 FLOWERS")
        with pytest.raises(TelephonyError, match="malformed call SID"):
            await control.hang_up("../../Accounts/AC1/Calls/CA1")
        with pytest.raises(TelephonyError, match="malformed call SID"):
            await control.transfer("", HUMAN)

    assert twilio.state.updates == []


async def test_auth_token_never_reaches_the_logs(
    twilio: Emulator, control: TwilioRestControl, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither structlog nor stdlib logging (twilio, urllib3) sees the token or the full number."""
    caplog.set_level(logging.DEBUG)
    twilio.state.add_call("CA2")
    twilio.state.end_call("CA2")
    with structlog.testing.capture_logs() as logs, trio.fail_after(STEP_TIMEOUT):
        await control.transfer(CALL_SID, HUMAN)
        await control.hang_up(CALL_SID)
        await control.hang_up("CA2")
        with pytest.raises(TelephonyError):
            await control.transfer("CA2", HUMAN)

    assert [line["event"] for line in logs] == [
        "twilio.call_transferred",
        "twilio.call_hung_up",
        "twilio.call_hung_up",
        "twilio.transfer_failed",
    ]
    assert logs[0]["to"] == "***0100"
    structlog_text = repr(logs)
    stdlib_text = "\n".join(
        f"{record.name} {record.getMessage()} {record.args!r}" for record in caplog.records
    )
    secrets = (AUTH_TOKEN, basic_auth(ACCOUNT_SID, AUTH_TOKEN)["Authorization"].split()[1], HUMAN)
    for text in (structlog_text, stdlib_text, repr(control)):
        for secret in secrets:
            assert secret not in text
    # twilio's own request logger (URL, headers, form fields at INFO) is held at WARNING.
    assert not [record for record in caplog.records if record.name.startswith("twilio")]


async def test_from_settings_aims_at_the_configured_base_url(twilio: Emulator) -> None:
    """TWILIO_API_BASE_URL, account and token come from Settings."""
    settings = Settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url=twilio.url + "/",
    )
    adapter = TwilioRestControl.from_settings(settings)
    try:
        with trio.fail_after(STEP_TIMEOUT):
            await adapter.hang_up(CALL_SID)
    finally:
        adapter.close()

    assert twilio.state.calls[CALL_SID].status == "completed"


# --- the emulator's own refusals ------------------------------------------------------------


def call_url(twilio: Emulator, account_sid: str = ACCOUNT_SID, call_sid: str = CALL_SID) -> str:
    return f"{twilio.url}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        pytest.param({"Twiml": "<Response/>", "Url": "https://x.test/"}, 400, None, id="both"),
        pytest.param({"Twiml": "<Response>" + " " * 4000 + "</Response>"}, 400, 32018, id="long"),
        pytest.param({"Twiml": "<Response>"}, 400, 12100, id="not-xml"),
    ],
)
async def test_emulator_rejects_bad_updates(
    twilio: Emulator, fields: dict[str, str], status: int, code: int | None
) -> None:
    """Twiml with Url, Twiml over 4000 characters and unparsable Twiml are refused."""
    with trio.fail_after(STEP_TIMEOUT):
        response = await post_form(
            call_url(twilio), fields, headers=basic_auth(ACCOUNT_SID, AUTH_TOKEN)
        )

    assert response.status == status
    body = json.loads(response.body)
    assert body["status"] == status
    assert body.get("code") == code
    assert twilio.state.updates == []


async def test_emulator_checks_auth_then_account(twilio: Emulator) -> None:
    """No auth is 401/20003; another account's path is 404/20404."""
    with trio.fail_after(STEP_TIMEOUT):
        anonymous = await post_form(call_url(twilio), {"Status": "completed"})
        other = await post_form(
            call_url(twilio, account_sid="AC" + "1" * 32),
            {"Status": "completed"},
            headers=basic_auth(ACCOUNT_SID, AUTH_TOKEN),
        )

    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert json.loads(anonymous.body)["code"] == 20003
    assert other.status == 404
    assert json.loads(other.body)["code"] == 20404
    assert twilio.state.calls[CALL_SID].status == "in-progress"


async def test_twilio_edge_and_region_in_the_environment_do_not_move_the_host(
    twilio: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TWILIO_EDGE/TWILIO_REGION in the process environment would make twilio-python rewrite
    the host to api.<edge>.<region>.twilio.com; only TWILIO_API_BASE_URL chooses it."""
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "9" * 32)
    adapter = TwilioRestControl(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_base_url=twilio.url
    )
    try:
        with trio.fail_after(STEP_TIMEOUT):
            await adapter.transfer(CALL_SID, HUMAN)
    finally:
        adapter.close()
    [update] = twilio.state.updates
    assert update.call_sid == CALL_SID


# ---- recordings (issue 21) -----------------------------------------------------------------


def current_recording_url(twilio: Emulator) -> str:
    return (
        f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}"
        "/Recordings/Twilio.CURRENT.json"
    )


async def test_the_recording_is_paused_and_resumed_through_twilio_current(
    twilio: Emulator, control: TwilioRestControl
) -> None:
    """``Status=paused`` with ``PauseBehavior``, then ``Status=in-progress``, on the call's
    current recording."""
    recording = twilio.state.start_recording(CALL_SID)
    with trio.fail_after(STEP_TIMEOUT):
        await control.set_recording(CALL_SID, paused=True, pause_behavior="skip")
        assert recording.status == "paused"
        await control.set_recording(CALL_SID, paused=False, pause_behavior="skip")
    assert twilio.state.updates == []  # the call itself was not updated
    assert [update.fields for update in twilio.state.recording_updates] == [
        {"Status": "paused", "PauseBehavior": "skip"},
        {"Status": "in-progress"},
    ]
    assert recording.changes == [("paused", "skip"), ("in-progress", "")]
    assert recording.status == "in-progress"


async def test_pausing_a_call_without_a_recording_raises(control: TwilioRestControl) -> None:
    with trio.fail_after(STEP_TIMEOUT), pytest.raises(TelephonyError) as refused:
        await control.set_recording(CALL_SID, paused=True, pause_behavior="skip")
    assert (refused.value.code, refused.value.status) == (20404, 404)


async def test_the_emulator_checks_the_recording_fields(twilio: Emulator) -> None:
    """As Twilio's reference says: Status in-progress, paused or stopped; PauseBehavior skip
    or silence; a stopped recording is no longer Twilio.CURRENT."""
    twilio.state.start_recording(CALL_SID)
    auth = basic_auth(ACCOUNT_SID, AUTH_TOKEN)
    with trio.fail_after(STEP_TIMEOUT):
        bad = await post_form(current_recording_url(twilio), {"Status": "muted"}, headers=auth)
        behaviour = await post_form(
            current_recording_url(twilio),
            {"Status": "paused", "PauseBehavior": "hum"},
            headers=auth,
        )
        stop = await post_form(current_recording_url(twilio), {"Status": "stopped"}, headers=auth)
        gone = await post_form(current_recording_url(twilio), {"Status": "paused"}, headers=auth)
    assert (bad.status, behaviour.status, stop.status, gone.status) == (400, 400, 200, 404)
    assert json.loads(stop.body)["status"] == "stopped"
    assert json.loads(stop.body)["channels"] == 2


async def test_recording_pauses_are_observed_for_the_metrics(twilio: Emulator) -> None:
    """Each pause and resume reaches ``observe`` (``archer_twilio_rest_requests_total``)."""
    seen: list[tuple[str, str]] = []
    adapter = TwilioRestControl(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        api_base_url=twilio.url,
        observe=lambda operation, outcome: seen.append((operation, outcome)),
    )
    try:
        with trio.fail_after(STEP_TIMEOUT):
            with pytest.raises(TelephonyError):
                await adapter.set_recording(CALL_SID, paused=True, pause_behavior="silence")
            twilio.state.start_recording(CALL_SID)
            await adapter.set_recording(CALL_SID, paused=True, pause_behavior="silence")
            await adapter.set_recording(CALL_SID, paused=False, pause_behavior="silence")
    finally:
        adapter.close()
    assert seen == [
        ("pause_recording", "refused"),
        ("pause_recording", "ok"),
        ("resume_recording", "ok"),
    ]
