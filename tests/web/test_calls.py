"""``POST /calls`` and ``GET /calls/{id}`` through quart-trio's test client, on a real database.

Acceptance 1 (a missing, wrong or revoked key is 401 and writes nothing; no key is stored in
clear: every table is searched) and 2 (the same ``Idempotency-Key`` twice queues one call and
answers the same body), plus bad input: a 4xx with one line, nothing written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import attrs
import pytest
import sqlalchemy as sa
import trio
from quart_trio import QuartTrio

from archer.app import create_app
from archer.call.tools import ToolRegistry
from archer.db.engine import init_schema
from archer.db.outbound import SqlOutbound
from archer.db.seed import seed_demo_bank
from archer.db.tables import metadata, outbound_requests, transactions
from archer.settings import Settings
from archer.twilio.signature import SignatureChecker
from archer.web.services import Services
from tests.fakes.agent import FakeAgentConnector
from tests.fakes.store import FakeCallStore, FakeSpool


@attrs.define
class Harness:
    app: QuartTrio
    queue: SqlOutbound
    key: str
    transaction_id: int

    async def post(
        self, body: object, *, key: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await self.app.test_client().post(
            "/calls", data=data, headers={"Content-Type": "application/json", **sent}
        )
        return response.status_code, await response.get_data(as_text=True)

    async def get(self, request_id: int, *, key: str | None) -> tuple[int, str]:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        response = await self.app.test_client().get(f"/calls/{request_id}", headers=headers)
        return response.status_code, await response.get_data(as_text=True)

    def body(self, **changes: object) -> dict[str, object]:
        return {
            "to": "+15555550101",
            "purpose": "fraud_alert",
            "transaction_id": self.transaction_id,
            **changes,
        }

    def everything(self) -> str:
        """Every row of every table, as text: what "nothing written" and "no key" are checked on."""
        with self.queue.engine.connect() as conn:
            return "\n".join(
                f"{table.name}: {row!r}"
                for table in metadata.sorted_tables
                for row in conn.execute(table.select())
            )

    def requests(self) -> int:
        with self.queue.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(outbound_requests)).scalar_one()
            )


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    queue = SqlOutbound.open(database_url, pool_size=2)
    try:
        await trio.to_thread.run_sync(init_schema, queue.engine)
        await trio.to_thread.run_sync(seed_demo_bank, queue.engine)
        key = queue.create_key("fraud-engine")
        with queue.engine.connect() as conn:
            transaction_id = conn.execute(sa.select(sa.func.min(transactions.c.id))).scalar_one()
        services = Services(
            settings=Settings(webhook_base_url="https://archer.example.com"),
            store=FakeCallStore(),
            agents=FakeAgentConnector(),
            tools=ToolRegistry(),
            signatures=SignatureChecker("unused"),
            spool=FakeSpool(),
            outbound=queue,
        )
        yield Harness(create_app(services), queue, key, int(transaction_id))
    finally:
        queue.close()


async def test_a_call_is_queued_and_its_state_can_be_read(harness: Harness) -> None:
    status, text = await harness.post(harness.body(), key=harness.key)
    assert status == 202
    answer = json.loads(text)
    assert answer == {"id": answer["id"], "status": "queued"}
    status, text = await harness.get(answer["id"], key=harness.key)
    assert status == 200
    state = json.loads(text)
    assert state["status"] == "queued"
    assert state["attempts"] == []
    assert state["answered_by"] is None
    assert state["end_reason"] is None
    assert state["call_id"] is None
    assert (await harness.get(answer["id"] + 1000, key=harness.key))[0] == 404


async def test_a_key_sees_only_the_calls_it_placed(harness: Harness) -> None:
    status, text = await harness.post(harness.body(), key=harness.key)
    assert status == 202
    request_id = json.loads(text)["id"]
    other_key = harness.queue.create_key("statements-service")
    status, text = await harness.get(request_id, key=other_key)
    assert (status, text) == (404, f"no outbound call with id {request_id}\n")
    assert (await harness.get(request_id, key=harness.key))[0] == 200


async def test_no_key_a_wrong_key_and_a_revoked_key_are_401_and_write_nothing(
    harness: Harness,
) -> None:
    other = harness.queue.create_key("revoked-one")
    assert harness.queue.revoke_key("revoked-one")
    before = harness.everything()
    for key in (None, "", "archer_not-a-key", harness.key + "x", other):
        status, text = await harness.post(harness.body(), key=key)
        assert status == 401, key
        assert text.count("\n") == 1
        assert (await harness.get(1, key=key))[0] == 401
    response = await harness.app.test_client().post(
        "/calls",
        json=harness.body(),
        headers={"Authorization": harness.key},  # no "Bearer"
    )
    assert response.status_code == 401
    assert harness.everything() == before


async def test_no_key_is_stored_in_clear_anywhere(harness: Harness) -> None:
    assert (await harness.post(harness.body(), key=harness.key))[0] == 202
    second = harness.queue.create_key("second")
    assert harness.queue.revoke_key("second")
    everything = harness.everything()
    assert everything.count("fraud-engine") == 1  # the rows are really there
    for key in (harness.key, second):
        assert key not in everything
        assert key.removeprefix("archer_")[:16] not in everything


async def test_the_same_idempotency_key_queues_one_call_and_answers_the_same_body(
    harness: Harness,
) -> None:
    headers = {"Idempotency-Key": "alert-7781"}
    first = await harness.post(harness.body(), key=harness.key, headers=headers)
    again = await harness.post(harness.body(), key=harness.key, headers=headers)
    assert first[0] == again[0] == 202
    assert json.loads(first[1]) == json.loads(again[1])
    assert harness.requests() == 1
    other = await harness.post(
        harness.body(), key=harness.key, headers={"Idempotency-Key": "alert-7782"}
    )
    assert json.loads(other[1])["id"] != json.loads(first[1])["id"]
    assert harness.requests() == 2


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "must be JSON"),
        (b"\xff\xfe", 400, "must be JSON"),
        ([1, 2], 400, "JSON object"),
        ({"purpose": "fraud_alert", "transaction_id": 1}, 400, "'to' is required"),
        ({"to": "5550101", "purpose": "fraud_alert", "transaction_id": 1}, 400, "E.164"),
        ({"to": "+15555550101", "purpose": "marketing", "transaction_id": 1}, 400, "fraud_alert"),
        ({"to": "+15555550101", "purpose": "fraud_alert", "transaction_id": "1"}, 400, "whole"),
        ({"to": "+15555550101", "purpose": "fraud_alert", "transaction_id": True}, 400, "whole"),
        ({"to": "+15555550101", "purpose": "fraud_alert", "transaction_id": -3}, 400, "positive"),
        ({"to": "+15555550101", "purpose": "fraud_alert", "transaction_id": 99999}, 422, "99999"),
        (
            {"to": "+15555550101", "purpose": "fraud_alert", "transaction_id": 1, "pan": "4111"},
            400,
            "unknown field 'pan'",
        ),
        (b"x" * 5000, 413, "larger"),
    ],
)
async def test_bad_input_is_one_line_and_writes_nothing(
    harness: Harness, body: object, status: int, says: str
) -> None:
    before = harness.everything()
    got, text = await harness.post(body, key=harness.key)
    assert got == status
    assert says in text
    assert text.count("\n") == 1
    assert harness.everything() == before


async def test_an_overlong_idempotency_key_is_refused(harness: Harness) -> None:
    status, text = await harness.post(
        harness.body(), key=harness.key, headers={"Idempotency-Key": "k" * 201}
    )
    assert status == 400
    assert "Idempotency-Key" in text
    assert harness.requests() == 0
