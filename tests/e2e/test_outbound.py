"""Outbound calls end to end on loopback: real Archer servers (hypercorn), the Twilio REST
emulator with its scripted callee (``archer.emulators.twilio.dialer``), a real database.

``POST /calls`` → the dispatcher's Calls API request (the parameters, no customer data) → the
callee rings → misses are retried (acceptance 5), a machine gets the voicemail by REST and
``end_reason=voicemail`` (acceptance 4), and two instances on one PostgreSQL place ten calls
once each at ``OUTBOUND_CPS=2`` (acceptance 6). The answered call's media stream, keypad
verification and the freeze (acceptance 3) are in ``test_outbound_fraud_alert.py``.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
import trio

from archer.db.engine import init_schema, make_engine
from archer.db.outbound import SqlOutbound
from archer.db.seed import seed_demo_bank
from archer.db.tables import accounts, customers, transactions
from archer.emulators.twilio.dialer import DialerState, serve_twilio_dialer
from archer.emulators.twilio.rest import TwilioRestState
from archer.server import serve
from archer.settings import Settings
from tests.helpers import free_port

AUTH_TOKEN = "outbound-e2e-auth-token"
ACCOUNT_SID = "AC" + "0b0b" * 8
FROM_NUMBER = "+15005550006"
STEP_TIMEOUT = 30.0


@attrs.define
class Outbound:
    dialer: DialerState
    urls: list[str]
    key: str
    transaction_id: int
    #: Everything about the transaction's customer that must never reach Twilio.
    secrets: list[str]

    def post_call(self, to: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        body = {"to": to, "purpose": "fraud_alert", "transaction_id": self.transaction_id}
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(
            self.urls[0] + "/calls", data=json.dumps(body).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def get_call(self, request_id: int) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.urls[-1]}/calls/{request_id}", headers={"Authorization": f"Bearer {self.key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            state: dict[str, Any] = json.loads(response.read())
            return state

    async def wait_until(self, request_id: int, status: str) -> dict[str, Any]:
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                state = await trio.to_thread.run_sync(self.get_call, request_id)
                if state["status"] == status:
                    return state
                await trio.sleep(0.1)


def _prepare(database_url: str) -> tuple[str, int, list[str]]:
    engine = make_engine(database_url, pool_size=1)
    try:
        init_schema(engine)
        seed_demo_bank(engine)
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    transactions.c.id,
                    transactions.c.description,
                    transactions.c.amount_cents,
                    accounts.c.last4,
                    customers.c.full_name,
                )
                .join(accounts, accounts.c.id == transactions.c.account_id)
                .join(customers, customers.c.id == accounts.c.customer_id)
                .order_by(transactions.c.id)
                .limit(1)
            ).one()
    finally:
        engine.dispose()
    queue = SqlOutbound.open(database_url, pool_size=1)
    try:
        key = queue.create_key(f"e2e-{free_port()}")
    finally:
        queue.close()
    amount = f"{abs(row.amount_cents) / 100:.2f}"
    return key, int(row.id), [row.description, amount, row.full_name or "", row.last4]


@asynccontextmanager
async def outbound_system(
    database_url: str,
    callees: list[str],
    *,
    instances: int = 1,
    cps: float = 20.0,
    window: str = "00:00-24:00",
    max_attempts: int = 3,
) -> AsyncIterator[Outbound]:
    key, transaction_id, secrets = await trio.to_thread.run_sync(_prepare, database_url)
    dialer = DialerState(TwilioRestState(ACCOUNT_SID, AUTH_TOKEN), callees=list(callees))
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(partial(serve_twilio_dialer, dialer))
        urls: list[str] = []
        for index in range(instances):
            port = free_port()
            settings = Settings(
                database_url=database_url,
                webhook_base_url=f"http://127.0.0.1:{port}",
                twilio_account_sid=ACCOUNT_SID,
                twilio_auth_token=AUTH_TOKEN,
                twilio_api_base_url=rest_url,
                cartesia_api_key="sk_car_unused",
                cartesia_agent_id="agent_unused",
                cartesia_ws_url="ws://127.0.0.1:9",
                spool_path=str(Path(tempfile.mkdtemp(prefix="archer-spool-")) / "calls.jsonl"),
                instance_id=f"outbound-{index}-{port}",
                outbound_from_number=FROM_NUMBER,
                outbound_cps=cps,
                outbound_window=window,
                outbound_retry_delay=0.2,
                outbound_max_attempts=max_attempts,
            )
            bound = await nursery.start(
                partial(
                    serve,
                    settings,
                    host="127.0.0.1",
                    port=port,
                    shutdown_trigger=trio.sleep_forever,
                )
            )
            urls.append(bound[0])
        try:
            yield Outbound(dialer, urls, key, transaction_id, secrets)
        finally:
            nursery.cancel_scope.cancel()


def _no_customer_data(system: Outbound) -> None:
    """Nothing about the customer or the payment in any Calls API request."""
    for created in system.dialer.created:
        sent = json.dumps(created.fields)
        for url in system.urls:  # a port may contain a card's last four digits by chance
            sent = sent.replace(url, "ARCHER")
        for secret in system.secrets:
            assert secret not in sent, secret


async def test_two_misses_then_an_answer_is_three_attempts(database_url: str) -> None:
    async with outbound_system(database_url, ["no-answer", "busy", "human"]) as system:
        queued = await trio.to_thread.run_sync(system.post_call, "+15555550101")
        state = await system.wait_until(queued["id"], "completed")
        assert [a["outcome"] for a in state["attempts"]] == ["no-answer", "busy", "completed"]
        assert [a["attempt"] for a in state["attempts"]] == [1, 2, 3]
        sids = [created.sid for created in system.dialer.created]
        assert [a["call_sid"] for a in state["attempts"]] == sids
        assert state["answered_by"] == "human"
        assert state["end_reason"] == "completed"
        assert state["call_id"] is not None
        # The Calls API request, as Twilio's reference names its parameters.
        first = system.dialer.created[0]
        assert first.field("To") == "+15555550101"
        assert first.field("From") == FROM_NUMBER
        assert first.field("MachineDetection") == "DetectMessageEnd"
        assert first.field("AsyncAmd") == "true"
        assert first.field("Timeout") == "30"
        assert sorted(first.fields["StatusCallbackEvent"]) == sorted(
            ["initiated", "ringing", "answered", "completed"]
        )
        assert first.field("Url") == (f"{system.urls[0]}/twilio/outbound/{queued['id']}/1/answer")
        _no_customer_data(system)
        # The answer's TwiML streams with a call SID and a token, nothing else.
        answer = ET.fromstring(system.dialer.answers[sids[2]])
        stream = answer.find("./Connect/Stream")
        assert stream is not None
        assert sorted(p.attrib["name"] for p in stream) == ["call_sid", "token"]
        # Every callback Archer got was signed and taken.
        assert system.dialer.undelivered == []
        assert {status for *_, status in system.dialer.delivered} == {200}


async def test_a_machine_gets_the_voicemail_and_the_call_ends(database_url: str) -> None:
    async with outbound_system(database_url, ["machine"]) as system:
        queued = await trio.to_thread.run_sync(system.post_call, "+15555550101")
        state = await system.wait_until(queued["id"], "completed")
        assert state["end_reason"] == "voicemail"
        assert state["answered_by"] == "machine_end_beep"
        assert len(state["attempts"]) == 1
        [update] = system.dialer.rest.updates
        assert update.call_sid == state["attempts"][0]["call_sid"]
        voicemail = ET.fromstring(update.fields["Twiml"])
        assert [child.tag for child in voicemail] == ["Say", "Hangup"]
        assert "call the number on the back of your card" in (voicemail[0].text or "")
        for secret in system.secrets:
            assert secret not in update.fields["Twiml"]
        _no_customer_data(system)


async def test_the_same_idempotency_key_places_one_call(database_url: str) -> None:
    async with outbound_system(database_url, ["busy"], max_attempts=1) as system:
        first = await trio.to_thread.run_sync(
            partial(system.post_call, "+15555550101", idempotency_key="same")
        )
        again = await trio.to_thread.run_sync(
            partial(system.post_call, "+15555550101", idempotency_key="same")
        )
        assert again == first
        await system.wait_until(first["id"], "failed")
        await trio.sleep(0.5)
        assert len(system.dialer.created) == 1


async def test_two_instances_place_ten_calls_once_each_at_the_pace(postgres_url: str) -> None:
    async with outbound_system(
        postgres_url, ["busy"] * 10, instances=2, cps=2, max_attempts=1
    ) as system:
        ids = []
        for n in range(10):
            queued = await trio.to_thread.run_sync(system.post_call, f"+1555555{n:04d}")
            ids.append(queued["id"])
        for request_id in ids:
            await system.wait_until(request_id, "failed")
        created = system.dialer.created
        assert sorted(c.field("To") for c in created) == [f"+1555555{n:04d}" for n in range(10)]
        moments = sorted(c.arrived_at for c in created)
        gaps = [b - a for a, b in itertools.pairwise(moments)]
        assert min(gaps) >= 0.45, gaps


async def test_nothing_is_placed_outside_the_calling_window(database_url: str) -> None:
    # A one-minute window twelve hours from now (in UTC): closed whenever the test runs.
    start = (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M")
    end = (datetime.now(UTC) + timedelta(hours=12, minutes=1)).strftime("%H:%M")
    async with outbound_system(database_url, ["human"], window=f"{start}-{end}") as system:
        queued = await trio.to_thread.run_sync(system.post_call, "+15555550101")
        await trio.sleep(1.5)
        assert system.dialer.created == []
        state = await trio.to_thread.run_sync(system.get_call, queued["id"])
        assert state["status"] == "queued"
        assert state["attempts"] == []
