"""Issue 22, acceptance 3: a fraud alert end to end on loopback, on both Cartesia protocols.

Real Archer (hypercorn), the Twilio Calls API emulator with a scripted callee that answers as a
person and runs the answer's media stream (``archer.emulators.twilio.dialer``), the Cartesia
emulator playing ``fraud_alert`` (Managed or Line), the real banking tools and a real database
(Managed on PostgreSQL, Line on SQLite). Real clock, real sockets, each wait under
``fail_after``.

``POST /calls`` → the Calls API request carries the parameters and no customer data → answered
→ signed TwiML fetch → stream → the agent's session start carries the purpose and the payment's
facts (and no account number, name or balance) → the callee keys the PIN during the agent's
``collect_pin`` lead-in (the agent receives no digit) → the callee says no →
``review_transaction(…, false)`` → exactly the paying card is frozen and the dispute recorded
against the transaction and the call → ``GET /calls/{id}``: completed, ``answered_by`` human,
one attempt, the call record's id.
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import trio

from archer.db.engine import init_schema, make_engine
from archer.db.outbound import SqlOutbound
from archer.db.seed import seed_demo_bank
from archer.db.tables import accounts, calls, cards, customers, transaction_reviews, transactions
from archer.emulators.cartesia.script import load_agent_script
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from archer.emulators.twilio.dialer import DialerState, serve_twilio_dialer
from archer.emulators.twilio.rest import TwilioRestState
from archer.emulators.twilio.script import load_caller_script
from archer.server import serve
from archer.settings import Settings
from tests.helpers import free_port

AUTH_TOKEN = "fraud-alert-e2e-auth-token"
ACCOUNT_SID = "AC" + "0f0f" * 8
FROM_NUMBER = "+15005550006"
MAYA = "+15555550101"
#: A payment made for this test, with an id no URL or counter will hold by chance.
TRANSACTION_ID = 987654
MERCHANT = "Example Store"
AMOUNT_CENTS = -41250
#: Maya's second card on the same checking account: it must stay active.
OTHER_CARD = "5150"
CALL_TIMEOUT = 90.0


@attrs.define
class FraudAlert:
    dialer: DialerState
    agent: CartesiaEmulator
    archer_url: str
    key: str
    engine: Any
    lines: list[str]

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.archer_url + path, data=data, headers=headers, method=method
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())


def _prepare(database_url: str) -> str:
    """The demo bank, one more card and the suspicious payment; a new API key."""
    engine = make_engine(database_url, pool_size=1)
    try:
        init_schema(engine)
        seed_demo_bank(engine)
        with engine.begin() as conn:
            customer_id, account_id = conn.execute(
                sa.select(customers.c.id, accounts.c.id)
                .join(accounts, accounts.c.customer_id == customers.c.id)
                .where(customers.c.phone_e164 == MAYA, accounts.c.last4 == "4821")
            ).one()
            card_id = conn.execute(
                sa.select(cards.c.id).where(cards.c.last4 == "2207")
            ).scalar_one()
            conn.execute(
                sa.insert(cards).values(
                    customer_id=customer_id, account_id=account_id, last4=OTHER_CARD
                )
            )
            conn.execute(
                sa.insert(transactions).values(
                    id=TRANSACTION_ID,
                    account_id=account_id,
                    posted_at=datetime.now(UTC) - timedelta(minutes=5),
                    amount_cents=AMOUNT_CENTS,
                    description=MERCHANT,
                    card_id=card_id,
                )
            )
    finally:
        engine.dispose()
    queue = SqlOutbound.open(database_url, pool_size=1)
    try:
        return queue.create_key(f"fraud-e2e-{free_port()}")
    finally:
        queue.close()


@asynccontextmanager
async def fraud_alert_system(database_url: str, protocol: str) -> AsyncIterator[FraudAlert]:
    key = await trio.to_thread.run_sync(_prepare, database_url)
    lines: list[str] = []
    dialer = DialerState(
        TwilioRestState(ACCOUNT_SID, AUTH_TOKEN),
        callees=["human"],
        callee_script=load_caller_script("callee_fraud_alert"),
        progress=lines.append,
    )
    agent = CartesiaEmulator(
        api_key="sk_car_fraud_e2e", script=load_agent_script("fraud_alert"), progress=lines.append
    )
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(partial(serve_twilio_dialer, dialer))
        agent_url = await nursery.start(serve_cartesia_emulator, agent)
        port = free_port()
        settings = Settings(
            database_url=database_url,
            webhook_base_url=f"http://127.0.0.1:{port}",
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_base_url=rest_url,
            cartesia_api_key="sk_car_fraud_e2e",
            cartesia_agent_id=agent.agent_id,
            cartesia_ws_url=agent_url,
            cartesia_protocol=protocol,
            spool_path=str(Path(tempfile.mkdtemp(prefix="archer-spool-")) / "calls.jsonl"),
            instance_id=f"fraud-{port}",
            outbound_from_number=FROM_NUMBER,
            outbound_cps=20.0,
        )
        urls = await nursery.start(
            partial(
                serve, settings, host="127.0.0.1", port=port, shutdown_trigger=trio.sleep_forever
            )
        )
        engine = make_engine(database_url, pool_size=1)
        try:
            yield FraudAlert(dialer, agent, urls[0], key, engine, lines)
        finally:
            engine.dispose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("protocol", "database_url"),
    [("managed", "postgres"), ("line", "sqlite")],
    indirect=["database_url"],
)
async def test_a_fraud_alert_freezes_the_paying_card(database_url: str, protocol: str) -> None:
    async with fraud_alert_system(database_url, protocol) as system:
        body = {"to": MAYA, "purpose": "fraud_alert", "transaction_id": TRANSACTION_ID}
        status, queued = await trio.to_thread.run_sync(
            partial(system.request, "POST", "/calls", body)
        )
        assert (status, queued["status"]) == (202, "queued")
        with trio.fail_after(CALL_TIMEOUT):
            while True:
                _, state = await trio.to_thread.run_sync(
                    partial(system.request, "GET", f"/calls/{queued['id']}")
                )
                if state["status"] in ("completed", "failed"):
                    break
                await trio.sleep(0.2)

        def read_database() -> tuple[dict[str, str], list[Any], int | None]:
            with system.engine.connect() as conn:
                statuses = {
                    str(row.last4): str(row.status)
                    for row in conn.execute(sa.select(cards.c.last4, cards.c.status))
                }
                reviews = conn.execute(sa.select(transaction_reviews)).all()
                call_id = conn.execute(
                    sa.select(calls.c.id).where(calls.c.call_sid == sid)
                ).scalar_one_or_none()
            return statuses, list(reviews), call_id

        [created] = system.dialer.created
        sid = created.sid
        statuses, reviews, call_id = await trio.to_thread.run_sync(read_database)
        [session] = system.agent.sessions
        leg = system.dialer.streams[sid]

    progress = "\n".join(system.lines)
    # GET /calls/{id}: completed by a person, one attempt, linked to the call record.
    assert state["status"] == "completed", progress
    assert (state["answered_by"], state["end_reason"]) == ("human", "completed")
    assert [(a["attempt"], a["call_sid"], a["outcome"]) for a in state["attempts"]] == [
        (1, sid, "completed")
    ]
    assert state["call_id"] == call_id
    assert call_id is not None

    # The Calls API request: Twilio's parameters, and nothing about the customer or payment.
    base = system.archer_url
    request_id = queued["id"]
    assert (created.field("To"), created.field("From")) == (MAYA, FROM_NUMBER)
    assert created.field("Url") == f"{base}/twilio/outbound/{request_id}/1/answer"
    assert created.field("StatusCallback") == f"{base}/twilio/outbound/{request_id}/1/status"
    assert sorted(created.fields["StatusCallbackEvent"]) == [
        "answered",
        "completed",
        "initiated",
        "ringing",
    ]
    assert created.field("MachineDetection") == "DetectMessageEnd"
    assert created.field("AsyncAmd") == "true"
    assert created.field("AsyncAmdStatusCallback") == f"{base}/twilio/outbound/{request_id}/1/amd"
    sent = json.dumps(created.fields).replace(base, "ARCHER")  # a port may hold any digits
    for secret in (MERCHANT, "412.50", "41250", str(TRANSACTION_ID), "4821", "2207", "Maya"):
        assert secret not in sent, secret
    # Every callback was signed and taken; the answer streamed with a token and a CallSid only.
    assert system.dialer.undelivered == []
    assert {answer for *_, answer in system.dialer.delivered} == {200}
    assert leg.opened
    assert leg.ended_by == "twilio_rest", leg.detail  # the agent's end_call hung up by REST

    # The agent's session opened with the purpose and the payment's facts, nothing more.
    started = session.dynamic_variables if protocol == "managed" else session.metadata
    tid: object = TRANSACTION_ID if protocol == "managed" else str(TRANSACTION_ID)
    assert {k: started[k] for k in ("call_purpose", "transaction_id", "merchant")} == {
        "call_purpose": "fraud_alert",
        "transaction_id": tid,
        "merchant": MERCHANT,
    }
    assert (started["amount"], started["currency"], started["card_last4"]) == (
        "412.50",
        "USD",
        "2207",
    )
    assert str(started["transaction_time"]).endswith("Z")
    # The number the agent is told it talks to is the customer's, not the bank's own.
    talking_to = started["caller_number"] if protocol == "managed" else started["from"]
    assert talking_to == MAYA
    opening = json.dumps(started)
    for secret in ("4821", "Maya", "Patel", "254310", "2543.10", "1234"):
        assert secret not in opening, secret
    # The agent said them back (after verification) and heard no keypad digit.
    asked = next(i for i, line in enumerate(system.lines) if "Did you pay" in line)
    verified = next(i for i, line in enumerate(system.lines) if "collect_pin returned" in line)
    assert verified < asked  # nothing about the payment before the PIN
    assert "412.50 USD at Example Store with your card ending 2207" in system.lines[asked]
    assert session.dtmf_digits == []
    assert leg.dtmf_sent == "1234#"
    results = {
        call.name: json.loads(session.tool_results[call.tool_call_id].result)
        for call in session.tool_calls
        if call.tool_call_id in session.tool_results  # end_call's session ends with the call
    }
    assert results["collect_pin"] == {"verified": True}
    assert results["review_transaction"] == {
        "transaction_id": TRANSACTION_ID,
        "recognised": False,
        "dispute_recorded": True,
        "cards_frozen": ["2207"],
        "freeze_scope": "card",
        "already_recorded": False,
    }

    # Exactly the card that paid is frozen; the dispute names the payment and the call.
    assert (statuses["2207"], statuses[OTHER_CARD], statuses["9904"]) == (
        "frozen",
        "active",
        "active",
    )
    [review] = reviews
    assert (review.transaction_id, review.call_sid, review.recognised) == (
        TRANSACTION_ID,
        sid,
        False,
    )
    assert (review.cards_frozen, review.freeze_scope) == ("2207", "card")
