"""SharedKey-signed requests on all three Twilio routes, signed by the twilio library itself.

An account that signs its webhooks with a SharedKey sends ``X-Twilio-Webhooks-Signature-Settings:
key=<key SID>,algorithm=HMAC_SHA256`` and an HMAC-SHA256 ``X-Twilio-Signature``. The signatures
here come from twilio-python's own ``RequestValidator.compute_signature`` (never from Archer's
checker), over real hypercorn on loopback: the voice webhook, the status callback, and the
media-stream upgrade on the quart-trio route and on the media listener. Two keys are configured,
as during a rotation; an unknown key, the wrong secret, a SharedKey signature without its
settings header, and the auth token's signature under a SharedKey header are all refused.
"""

from __future__ import annotations

import pytest
import trio
import trio_websocket
from twilio.request_validator import RequestValidator

from archer.emulators.http import post_form
from archer.twilio.signature import webhook_url
from archer.websocket_client import open_websocket_client
from tests.e2e.peers import AgentPeer
from tests.e2e.test_call import AUTH_TOKEN, PUBLIC_BASE_URL, running_system

OLD_KEY, OLD_SECRET = "webhooks_sharedkey_old01", "old-shared-secret"
NEW_KEY, NEW_SECRET = "webhooks_sharedkey_new02", "new-shared-secret"
SHARED_KEYS = {OLD_KEY: OLD_SECRET, NEW_KEY: NEW_SECRET}
SHA256 = "HMAC_SHA256"

#: (settings header, secret that signs, algorithm) → whether Archer must accept.
CASES = [
    pytest.param(f"key={NEW_KEY},algorithm={SHA256}", NEW_SECRET, SHA256, True, id="new-key"),
    pytest.param(f"key={OLD_KEY},algorithm={SHA256}", OLD_SECRET, SHA256, True, id="old-key"),
    pytest.param(None, AUTH_TOKEN, "HMAC_SHA1", True, id="auth-token"),
    pytest.param(f"key={NEW_KEY},algorithm={SHA256}", OLD_SECRET, SHA256, False, id="wrong-secret"),
    pytest.param(
        f"key=webhooks_sharedkey_zz,algorithm={SHA256}", NEW_SECRET, SHA256, False, id="unknown-key"
    ),
    pytest.param(f"algorithm={SHA256}", NEW_SECRET, SHA256, False, id="no-key-named"),
    pytest.param(None, NEW_SECRET, SHA256, False, id="no-settings-header"),
    pytest.param(
        f"key={NEW_KEY},algorithm={SHA256}",
        AUTH_TOKEN,
        "HMAC_SHA1",
        False,
        id="auth-token-under-a-key",
    ),
]


def headers_for(
    url: str, fields: dict[str, str], settings: str | None, secret: str, algorithm: str
) -> dict[str, str]:
    signature = RequestValidator(secret).compute_signature(url, fields, algorithm)
    headers = {"X-Twilio-Signature": signature}
    if settings is not None:
        headers["X-Twilio-Webhooks-Signature-Settings"] = settings
    return headers


async def listen(peer: AgentPeer) -> None:
    await peer.accept_session()
    await trio.sleep_forever()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("settings", "secret", "algorithm", "accepted"), CASES)
async def test_webhook_and_status_callback(
    database_url: str, settings: str | None, secret: str, algorithm: str, accepted: bool
) -> None:
    async with running_system(database_url, listen, twilio_shared_keys=SHARED_KEYS) as system:
        fields = system.caller.webhook_fields()
        for path, extra in (
            ("/twilio/voice", {}),
            ("/twilio/status", {"CallStatus": "completed", "CallDuration": "7"}),
        ):
            form = {**fields, **extra}
            url = webhook_url(PUBLIC_BASE_URL, path)
            response = await post_form(
                system.caller.archer_url + path,
                form,
                headers=headers_for(url, form, settings, secret, algorithm),
            )
            assert response.status == (200 if accepted else 403), (path, response.text)


async def upgrade_status(url: str, headers: dict[str, str]) -> int:
    """101 if the media-stream upgrade was accepted, else the status it was refused with."""
    status = 0
    try:
        async with open_websocket_client(
            url, extra_headers=[(name.encode(), value.encode()) for name, value in headers.items()]
        ):
            status = 101
    except* trio_websocket.ConnectionRejected as group:
        [rejected] = group.exceptions
        assert isinstance(rejected, trio_websocket.ConnectionRejected)
        status = rejected.status_code
    return status


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
@pytest.mark.parametrize(("settings", "secret", "algorithm", "accepted"), CASES)
async def test_media_stream_upgrade(
    database_url: str,
    media_listener: bool,
    settings: str | None,
    secret: str,
    algorithm: str,
    accepted: bool,
) -> None:
    async with running_system(
        database_url, listen, twilio_shared_keys=SHARED_KEYS, media_listener=media_listener
    ) as system:
        await system.caller.dial()
        stream_url = system.caller.stream_url
        base = system.caller.media_url or system.caller.archer_url
        url = base.replace("http", "ws", 1) + "/" + stream_url.split("/", 3)[3]
        status = await upgrade_status(url, headers_for(stream_url, {}, settings, secret, algorithm))
    assert status == (101 if accepted else 403)
