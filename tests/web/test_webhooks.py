"""The Twilio webhooks through quart-trio's test client, with the call store faked.

Signatures are computed with the real twilio library against the public URL, exactly as Twilio
does; Archer must rebuild that URL from ``WEBHOOK_BASE_URL`` and ignore the Host header.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import attrs
import pytest
from quart_trio import QuartTrio

from archer.app import create_app
from archer.call.tools import ToolRegistry
from archer.settings import Settings
from archer.twilio.signature import SignatureChecker
from archer.web.services import Services
from tests.fakes.agent import FakeAgentConnector
from tests.fakes.store import FakeCallStore, FakeSpool

BASE_URL = "https://archer.example.com"
TOKEN = "webhook-test-auth-token"
CALL_SID = "CA" + "ab" * 16
FIELDS = {
    "AccountSid": "AC" + "cd" * 16,
    "ApiVersion": "2010-04-01",
    "CallSid": CALL_SID,
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": "+15555550101",
    "To": "+15555550000",
    "StirVerstat": "TN-Validation-Passed-A",
}


@attrs.define
class Harness:
    app: QuartTrio
    store: FakeCallStore
    app_services: Services

    async def post(
        self, path: str, fields: dict[str, str], *, signature: str | None = "valid"
    ) -> tuple[int, str]:
        headers = {}
        if signature == "valid":
            headers["X-Twilio-Signature"] = SignatureChecker(TOKEN).sign(BASE_URL + path, fields)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        client = self.app.test_client()
        response = await client.post(path, form=fields, headers=headers)
        return response.status_code, await response.get_data(as_text=True)


@pytest.fixture
async def harness() -> Harness:
    store = FakeCallStore()
    settings = Settings(
        webhook_base_url=BASE_URL,
        twilio_account_sid=FIELDS["AccountSid"],
        twilio_auth_token=TOKEN,
        cartesia_api_key="sk_car_test",
        cartesia_agent_id="agent_test",
    )
    services = Services(
        settings=settings,
        store=store,
        agents=FakeAgentConnector(),
        tools=ToolRegistry(),
        signatures=SignatureChecker(TOKEN),
        spool=FakeSpool(),
    )
    return Harness(create_app(services), store, services)


async def test_incoming_call_gets_stream_twiml_and_a_call_row(harness: Harness) -> None:
    """A signed webhook opens the call and answers <Connect><Stream> with its parameters."""
    status, body = await harness.post("/twilio/voice", FIELDS)
    assert status == 200
    root = ET.fromstring(body)
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.attrib["url"] == "wss://archer.example.com/ws/cartesia"
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream}
    assert parameters["call_sid"] == CALL_SID
    assert parameters["customer_phone"] == "+15555550101"
    assert parameters["customer_id"] == "1"
    assert len(parameters["token"]) >= 40
    assert harness.store.calls[CALL_SID].status == "initiated"
    # The token is stored only as its hash.
    assert parameters["token"] not in str(harness.store.tokens)


@pytest.mark.parametrize("caller", ["anonymous", "+", "client:alice", "sip:bob@example.com", ""])
async def test_withheld_or_odd_caller_ids_still_get_a_call(caller: str, harness: Harness) -> None:
    """A caller that is not an E.164 number is streamed without a customer."""
    status, body = await harness.post("/twilio/voice", {**FIELDS, "From": caller})
    assert status == 200
    assert "<Stream" in body
    parameters = {
        p.attrib["name"]: p.attrib["value"] for p in ET.fromstring(body).iter("Parameter")
    }
    assert (parameters["customer_id"], parameters["customer_phone"]) == ("", "")
    assert harness.store.calls[CALL_SID].customer_id is None


@pytest.mark.parametrize(
    "signature",
    [None, "", "bm90IGEgc2lnbmF0dXJl", "forged"],
    ids=["missing", "empty", "wrong", "junk"],
)
@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/status"])
async def test_unsigned_or_forged_webhooks_get_403_and_touch_nothing(
    path: str, signature: str | None, harness: Harness
) -> None:
    """No valid signature: 403, and the store is never called."""
    status, _ = await harness.post(path, {**FIELDS, "CallStatus": "completed"}, signature=signature)
    assert status == 403
    assert harness.store.calls == {}
    assert harness.store.statuses == {}


async def test_a_signature_for_another_url_is_refused(harness: Harness) -> None:
    """A signature over the right fields but another URL (say, the Host Archer sees) is refused."""
    signature = SignatureChecker(TOKEN).sign("http://localhost/twilio/voice", FIELDS)
    status, _ = await harness.post("/twilio/voice", FIELDS, signature=signature)
    assert status == 403


async def test_tampered_fields_are_refused(harness: Harness) -> None:
    """Changing one field after signing breaks the signature."""
    signature = SignatureChecker(TOKEN).sign(BASE_URL + "/twilio/voice", FIELDS)
    tampered = {**FIELDS, "From": "+15555550199"}
    status, _ = await harness.post("/twilio/voice", tampered, signature=signature)
    assert status == 403


async def test_database_down_means_an_apology_not_a_500(harness: Harness) -> None:
    """With the store down the caller hears <Say> and the call is hung up."""
    harness.store.down = True
    status, body = await harness.post("/twilio/voice", FIELDS)
    assert status == 200
    root = ET.fromstring(body)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert "sorry" in (root[0].text or "").lower()


async def test_status_callback_records_status_and_duration(harness: Harness) -> None:
    """The final status and duration land; a repeat is harmless."""
    fields = {**FIELDS, "CallStatus": "completed", "CallDuration": "42"}
    for _ in range(2):
        status, body = await harness.post("/twilio/status", fields)
        assert status == 200
        assert ET.fromstring(body).tag == "Response"
    update = harness.store.statuses[CALL_SID]
    assert (update.twilio_status, update.twilio_duration_s) == ("completed", 42)


async def test_status_callback_without_a_duration(harness: Harness) -> None:
    """``busy`` and ``no-answer`` come without ``CallDuration``; the duration stays unknown."""
    status, _ = await harness.post("/twilio/status", {**FIELDS, "CallStatus": "busy"})
    assert status == 200
    assert harness.store.statuses[CALL_SID].twilio_duration_s is None


async def test_status_callback_with_the_database_down_is_spooled(harness: Harness) -> None:
    """Twilio does not retry it, so it is kept in the spool (replayed later) and answered 200."""
    harness.store.down = True
    fields = {**FIELDS, "CallStatus": "completed", "CallDuration": "42"}
    status, body = await harness.post("/twilio/status", fields)
    assert status == 200
    assert ET.fromstring(body).tag == "Response"
    spool = harness.app_services.spool
    assert isinstance(spool, FakeSpool)
    [update] = spool.statuses
    assert (update.call_sid, update.twilio_status, update.twilio_duration_s) == (
        CALL_SID,
        "completed",
        42,
    )


async def test_status_callback_with_database_and_spool_down_is_a_503(harness: Harness) -> None:
    """Only when even the disk refuses does Twilio see a failure (in its debugger)."""
    harness.store.down = True
    spool = harness.app_services.spool
    assert isinstance(spool, FakeSpool)
    spool.broken = True
    status, _ = await harness.post("/twilio/status", {**FIELDS, "CallStatus": "completed"})
    assert status == 503


async def test_webhook_without_call_sid_is_a_400(harness: Harness) -> None:
    """A signed request missing CallSid is a client error, not a crash."""
    fields = {k: v for k, v in FIELDS.items() if k != "CallSid"}
    status, _ = await harness.post("/twilio/voice", fields)
    assert status == 400


async def test_health_and_readiness(harness: Harness) -> None:
    """/healthz always answers; /readyz follows the database."""
    client = harness.app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    harness.store.down = True
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "database" in await response.get_data(as_text=True)


async def test_draining_refuses_new_calls_politely_and_is_not_ready(harness: Harness) -> None:
    """While draining, new calls hear the apology (no call row) and /readyz answers 503."""
    harness.app_services.drain.start()
    status, body = await harness.post("/twilio/voice", FIELDS)
    assert status == 200
    assert [child.tag for child in ET.fromstring(body)] == ["Say", "Hangup"]
    assert harness.store.calls == {}
    response = await harness.app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "draining" in await response.get_data(as_text=True)


RECORDING_SID = "RE" + "ef" * 16


def recording_fields(status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": FIELDS["AccountSid"],
        "CallSid": CALL_SID,
        "RecordingSid": RECORDING_SID,
        "RecordingStatus": status,
        "RecordingChannels": "2",
        **extra,
    }


async def test_recording_callback_is_stored_signed_and_idempotent(harness: Harness) -> None:
    """Issue 21: the recording's SID, status, channels, duration and URL land; never audio."""
    await harness.post("/twilio/voice", FIELDS)  # the call row
    fields = recording_fields(
        "completed",
        RecordingDuration="41",
        RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE",
    )
    for _ in range(2):
        status, body = await harness.post("/twilio/recording", fields)
        assert status == 200
        assert ET.fromstring(body).tag == "Response"
    stored = harness.store.recordings[RECORDING_SID]
    assert (stored.status, stored.channels, stored.duration_s) == ("completed", 2, 41)
    assert (await harness.post("/twilio/recording", fields, signature="forged"))[0] == 403
    assert (await harness.post("/twilio/recording", {**fields, "RecordingSid": ""}))[0] == 400


async def test_recording_callback_with_the_database_down_is_spooled(harness: Harness) -> None:
    harness.store.down = True
    status, _ = await harness.post("/twilio/recording", recording_fields("in-progress"))
    assert status == 200
    spool = harness.app_services.spool
    assert isinstance(spool, FakeSpool)
    [update] = spool.recordings
    assert (update.call_sid, update.recording_sid, update.status) == (
        CALL_SID,
        RECORDING_SID,
        "in-progress",
    )
    spool.broken = True
    assert (await harness.post("/twilio/recording", recording_fields("completed")))[0] == 503


async def test_dual_recording_starts_before_the_stream(harness: Harness) -> None:
    """``RECORDING=dual``: the webhook's TwiML records the call, reported to /twilio/recording."""
    services = attrs.evolve(
        harness.app_services,
        settings=attrs.evolve(harness.app_services.settings, recording="dual"),
    )
    status, body = await Harness(create_app(services), harness.store, services).post(
        "/twilio/voice", FIELDS
    )
    assert status == 200
    root = ET.fromstring(body)
    assert [child.tag for child in root] == ["Start", "Connect", "Hangup"]
    recording = root.find("./Start/Recording")
    assert recording is not None
    assert recording.attrib["channels"] == "dual"
    assert recording.attrib["recordingStatusCallback"] == BASE_URL + "/twilio/recording"
