"""``MAX_ACTIVE_CALLS`` over real sockets: real hypercorn, real WebSockets, the real database.

Two calls are carried (one on the quart-trio route, one on the dedicated media listener, the
two places a call is counted); the process is at its cap of two. ``/readyz`` answers 503 with
the counts, a third webhook hears the busy apology and is written as one finished
``overflow`` row — no customer, no token, no turns — and once a call ends the next webhook is
answered with a stream again.
"""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import sqlalchemy as sa
import trio

from archer.db.store import SqlCallStore
from archer.server import serve
from archer.settings import CallLimits, Settings
from tests.e2e.peers import AgentPeer, AgentServer, TwilioCaller
from tests.e2e.test_call import closed_port
from tests.helpers import eventually

PUBLIC_BASE_URL = "https://archer.capacity.test"
AUTH_TOKEN = "capacity-e2e-auth-token"


async def stay_on_the_line(peer: AgentPeer) -> None:
    await peer.accept_session()
    await peer.closed.wait()


async def http_get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()

    return await trio.to_thread.run_sync(get)


async def test_at_the_cap_readyz_is_503_and_a_further_call_overflows(database_url: str) -> None:
    media_port = closed_port()
    spool_dir = Path(tempfile.mkdtemp(prefix="archer-spool-"))
    async with trio.open_nursery() as nursery:
        agent = AgentServer(stay_on_the_line)
        await nursery.start(agent.run)
        settings = Settings(
            database_url=database_url,
            webhook_base_url=PUBLIC_BASE_URL,
            twilio_account_sid="AC" + "ca9a" * 8,
            twilio_auth_token=AUTH_TOKEN,
            cartesia_api_key=agent.api_key,
            cartesia_agent_id="agent_capacity",
            cartesia_ws_url=agent.url,
            spool_path=str(spool_dir / "calls.jsonl"),
            media_port=media_port,
            max_active_calls=2,
            limits=CallLimits(agent_ready_timeout=5.0, flush_timeout=5.0),
        )
        [base] = await nursery.start(
            partial(serve, settings, host="127.0.0.1", port=0, shutdown_trigger=trio.sleep_forever)
        )
        store = SqlCallStore.open(database_url, pool_size=2)
        try:

            def caller(n: int, *, media_listener: bool = False) -> TwilioCaller:
                return TwilioCaller(
                    archer_url=base,
                    public_base_url=PUBLIC_BASE_URL,
                    auth_token=AUTH_TOKEN,
                    media_url=f"http://127.0.0.1:{media_port}" if media_listener else None,
                    call_sid=f"CA{n:032x}",
                    stream_sid=f"MZ{n:032x}",
                    from_number=f"+1555555010{n}",
                )

            carried = [caller(1), caller(2, media_listener=True)]
            for call in carried:
                assert "<Stream" in (await call.dial()).text
                await call.connect(nursery)

            async def two_live() -> bool:
                status, body = await http_get(base + "/readyz")
                return status == 503 and json.loads(body)["live_calls"] == 2

            with trio.fail_after(10):
                await eventually(two_live)
            status, body = await http_get(base + "/readyz")
            assert status == 503
            assert json.loads(body) == {
                "ready": False,
                "reason": "at capacity",
                "live_calls": 2,
                "reserved_calls": 0,
                "max_active_calls": 2,
                "draining": False,
            }

            third = caller(3)
            refused = await third.dial()
            assert refused.status == 200
            root = ET.fromstring(refused.text)
            assert [child.tag for child in root] == ["Say", "Hangup"]
            assert third.stream_url == ""  # nothing to dial: no stream, no token

            # What is written for it: one finished row and nothing else.
            stored = await store.load_call(third.call_sid)
            assert stored is not None
            assert (stored.record.status, stored.record.end_reason) == ("failed", "overflow")
            assert (stored.record.turns, stored.record.tool_calls) == ((), ())
            row = await trio.to_thread.run_sync(overflow_row, store, third.call_sid)
            assert row == {
                "customer_id": None,
                "stream_sid": None,
                "stream_token_hash": None,
                "stream_token_expires_at": None,
                "duration_ms": None,
                "frames_in": 0,
            }
            customers = await trio.to_thread.run_sync(customer_phones, store)
            assert third.from_number not in customers  # no customer created for it
            assert len(agent.peers) == 2  # and no agent session

            _, metrics = await http_get(base + "/metrics")
            assert 'archer_calls_overflowed_total{outcome="apology"} 1.0' in metrics
            assert "archer_calls_active 2.0" in metrics

            await carried[0].stop()

            async def ready_again() -> bool:
                return (await http_get(base + "/readyz"))[0] == 200

            with trio.fail_after(10):
                await eventually(ready_again)
            assert "<Stream" in (await caller(4).dial()).text
        finally:
            await store.aclose()
            nursery.cancel_scope.cancel()


def overflow_row(store: SqlCallStore, call_sid: str) -> dict[str, object]:
    columns = (
        "customer_id",
        "stream_sid",
        "stream_token_hash",
        "stream_token_expires_at",
        "duration_ms",
        "frames_in",
    )
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {', '.join(columns)} FROM calls WHERE call_sid = :sid"),
            {"sid": call_sid},
        ).one()
    return dict(zip(columns, row, strict=True))


def customer_phones(store: SqlCallStore) -> set[str]:
    with store.engine.connect() as conn:
        return {phone for (phone,) in conn.execute(sa.text("SELECT phone_e164 FROM customers"))}
