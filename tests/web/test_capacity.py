"""``MAX_ACTIVE_CALLS``: the reservation book, ``/readyz`` and the overflow answer.

Through quart-trio's test client with the call store faked (the end-to-end version, with real
sockets and a real database, is ``tests/e2e/test_capacity.py``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import attrs
import pytest
import trio
from quart_trio import QuartTrio

from archer.app import create_app
from archer.call.tools import ToolRegistry
from archer.settings import Settings
from archer.twilio.signature import SignatureChecker
from archer.web.capacity import RESERVATION_SECONDS, Capacity
from archer.web.drain import Drain
from archer.web.services import Services
from tests.app.test_metrics import value
from tests.fakes.agent import FakeAgentConnector
from tests.fakes.store import FakeCallStore, FakeSpool

BASE_URL = "https://archer.example.com"
TOKEN = "capacity-test-auth-token"


def fields(n: int) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "cd" * 16,
        "ApiVersion": "2010-04-01",
        "CallSid": f"CA{n:032x}",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15555550101",
        "To": "+15555550000",
    }


@attrs.define
class Harness:
    app: QuartTrio
    store: FakeCallStore
    services: Services

    async def dial(self, n: int) -> ET.Element:
        form = fields(n)
        signature = SignatureChecker(TOKEN).sign(BASE_URL + "/twilio/voice", form)
        response = await self.app.test_client().post(
            "/twilio/voice", form=form, headers={"X-Twilio-Signature": signature}
        )
        assert response.status_code == 200
        return ET.fromstring(await response.get_data(as_text=True))

    async def readyz(self) -> tuple[int, dict[str, object]]:
        response = await self.app.test_client().get("/readyz")
        assert response.content_type == "application/json"
        return response.status_code, json.loads(await response.get_data(as_text=True))


def harness_with(**settings: object) -> Harness:
    store = FakeCallStore()
    services = Services(
        settings=Settings(
            webhook_base_url=BASE_URL,
            twilio_account_sid="AC" + "cd" * 16,
            twilio_auth_token=TOKEN,
            cartesia_api_key="sk_car_test",
            cartesia_agent_id="agent_test",
            **settings,  # type: ignore[arg-type]
        ),
        store=store,
        agents=FakeAgentConnector(),
        tools=ToolRegistry(),
        signatures=SignatureChecker(TOKEN),
        spool=FakeSpool(),
    )
    return Harness(create_app(services), store, services)


def tags(twiml: ET.Element) -> list[str]:
    return [child.tag for child in twiml]


async def test_reservations_fill_the_cap_and_lapse(autojump_clock: trio.abc.Clock) -> None:
    """Answered calls hold a place until their stream claims it or the reservation lapses."""
    drain = Drain()
    capacity = Capacity(2, drain)
    assert capacity.admit("CA1")
    assert capacity.admit("CA1")  # a retried webhook keeps its one place
    assert capacity.admit("CA2")
    assert capacity.full
    assert not capacity.admit("CA3")
    capacity.release("CA1")  # its stream arrived here and is now a live call
    with drain.call():
        assert capacity.snapshot() == {
            "live_calls": 1,
            "reserved_calls": 1,
            "max_active_calls": 2,
            "draining": False,
        }
        assert not capacity.admit("CA3")
        # CA2's stream went to another instance: its place here comes back after a while.
        await trio.sleep(RESERVATION_SECONDS)
        assert capacity.reserved_calls == 0
        assert capacity.admit("CA3")
    assert capacity.live_calls == 0


async def test_readyz_reports_the_counts_ready_or_not() -> None:
    """The body is JSON with live calls and the cap; at the cap it is 503 'at capacity'."""
    harness = harness_with(max_active_calls=2)
    assert await harness.readyz() == (
        200,
        {
            "ready": True,
            "reason": None,
            "live_calls": 0,
            "reserved_calls": 0,
            "max_active_calls": 2,
            "draining": False,
        },
    )
    with harness.services.drain.call(), harness.services.drain.call():
        status, body = await harness.readyz()
        assert status == 503
        assert body["reason"] == "at capacity"
        assert (body["live_calls"], body["max_active_calls"]) == (2, 2)
    harness.services.drain.start()
    status, body = await harness.readyz()
    assert (status, body["reason"], body["draining"]) == (503, "draining", True)


async def test_a_webhook_at_the_cap_hears_the_busy_apology_and_one_overflow_row() -> None:
    """Two answered calls fill a cap of two; the third is apologised to and written as such."""
    harness = harness_with(max_active_calls=2)
    assert tags(await harness.dial(1)) == ["Connect", "Hangup"]
    assert tags(await harness.dial(2)) == ["Connect", "Hangup"]
    status, body = await harness.readyz()
    assert (status, body["reserved_calls"]) == (503, 2)
    refused = await harness.dial(3)
    assert tags(refused) == ["Say", "Hangup"]
    assert "busy" in (refused[0].text or "")
    overflow = harness.store.calls[fields(3)["CallSid"]]
    assert (overflow.status, overflow.end_reason) == ("failed", "overflow")
    assert overflow.stream_sid is None
    assert fields(3)["CallSid"] not in harness.store.tokens  # no stream can ever claim it
    metrics = harness.services.metrics
    assert value(metrics, "archer_calls_overflowed_total", outcome="apology") == 1
    assert value(metrics, "archer_webhook_apologies_total") == 0  # not the outage apology


async def test_a_webhook_at_the_cap_is_sent_to_the_overflow_number() -> None:
    harness = harness_with(max_active_calls=1, overflow_number="+15555550123")
    await harness.dial(1)
    sent_on = await harness.dial(2)
    assert tags(sent_on) == ["Dial"]
    assert sent_on[0].text == "+15555550123"
    overflow = harness.store.calls[fields(2)["CallSid"]]
    assert (overflow.status, overflow.end_reason) == ("transferred", "overflow")
    metrics = harness.services.metrics
    assert value(metrics, "archer_calls_overflowed_total", outcome="redirected") == 1


async def test_the_overflow_answer_does_not_wait_for_a_broken_database() -> None:
    """With the database down the caller still gets the overflow answer (the row is lost)."""
    harness = harness_with(max_active_calls=1)
    await harness.dial(1)
    harness.store.down = True
    assert tags(await harness.dial(2)) == ["Say", "Hangup"]
    assert fields(2)["CallSid"] not in harness.store.calls


@pytest.mark.parametrize("number", ["5555550123", "+1 555", "tel:+15555550123"])
def test_overflow_number_must_be_e164(number: str) -> None:
    from archer.errors import ConfigError

    with pytest.raises(ConfigError, match="OVERFLOW_NUMBER"):
        Settings.from_environ({"OVERFLOW_NUMBER": number})


def test_capacity_settings_and_the_drain_that_covers_the_longest_call() -> None:
    """Defaults: 50 calls, no overflow number, a drain as long as a call can still run."""
    settings = Settings.from_environ({})
    assert (settings.max_active_calls, settings.overflow_number) == (50, "")
    assert settings.drain_timeout == 60 + 10 + 3600
    assert Settings().drain_timeout == settings.drain_timeout
    shorter = Settings.from_environ({"MAX_CALL_SECONDS": "600", "STREAM_TOKEN_TTL": "30"})
    assert shorter.drain_timeout == 30 + 10 + 600
    assert Settings.from_environ({"DRAIN_TIMEOUT": "45"}).drain_timeout == 45
