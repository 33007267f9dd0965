"""Several real ``archer serve`` processes on one real PostgreSQL: leases, the reaper, the spool.

Each instance is a process of its own (its own ``INSTANCE_ID``, working directory and port); they
share the database and the spool directory, as pods behind a load balancer share PostgreSQL and
a volume. The agent and the caller are the test's own peers speaking the protocols (Managed
Agents, Twilio Media Streams) over loopback; the banking tools are Archer's real ones on the
seeded demo bank.

Short leases so the tests are quick: lease 3 s, heartbeat 1 s, reaper every 1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import trio

from archer.cartesia import managed
from archer.db.engine import make_engine
from archer.db.seed import seed_demo_bank
from archer.db.store import SqlCallStore, StoredCall
from archer.db.tables import call_turns, calls, cards, tool_calls
from tests.e2e.peers import AgentPeer, AgentServer, TwilioCaller
from tests.e2e.tcp_proxy import TcpProxy
from tests.helpers import audio, eventually, free_port

LEASE = 3.0
HEARTBEAT = 1.0
REAPER = 1.0
#: Room for two process start-ups and polling on a loaded two-core machine.
SLACK = 2.5
AUTH_TOKEN = "instances-test-auth-token"
BASE_URL = "https://archer.instances.test"
SEED = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
MAYA = json.loads(SEED.read_text())["customers"][0]


@attrs.define
class Instance:
    """One ``archer serve`` process."""

    name: str
    port: int
    process: trio.Process
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError:
        return 0


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return str(reply.read().decode())


@attrs.define
class Cluster:
    """Instances on one database and one spool directory, and a way to read what they wrote."""

    database_url: str
    agent: AgentServer
    root: Path
    store: SqlCallStore
    instances: list[Instance] = attrs.Factory(list)

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    async def start(
        self, name: str, *, database_url: str | None = None, reaper_interval: float = REAPER
    ) -> Instance:
        workdir = self.root / name
        workdir.mkdir()
        port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": database_url or self.database_url,
            "WEBHOOK_BASE_URL": BASE_URL,
            "TWILIO_ACCOUNT_SID": "AC" + "5" * 32,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "CARTESIA_API_KEY": self.agent.api_key,
            "CARTESIA_AGENT_ID": "agent_instances",
            "CARTESIA_WS_URL": self.agent.url,
            "SPOOL_PATH": str(self.spool_dir / "calls.jsonl"),
            "SPOOL_REPLAY_INTERVAL": "0.5",
            "FLUSH_TIMEOUT": "2",
            "INSTANCE_ID": name,
            "INSTANCE_LEASE_SECONDS": str(LEASE),
            "INSTANCE_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "REAPER_INTERVAL": str(reaper_interval),
            "LOG_FORMAT": "json",
            "PIN_ENTRY": "both",  # the agent here verifies with verify_caller(pin)
        }
        log = (self.root / f"{name}.log").open("w")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "archer", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        instance = Instance(name, port, process, workdir)
        self.instances.append(instance)

        async def ready() -> bool:
            return await trio.to_thread.run_sync(http_status, instance.url + "/readyz") == 200

        with trio.fail_after(30):
            await eventually(ready, interval=0.2)
        return instance

    def caller(self, answering: Instance, streaming: Instance, call_sid: str) -> TwilioCaller:
        return TwilioCaller(
            archer_url=answering.url,
            public_base_url=BASE_URL,
            auth_token=AUTH_TOKEN,
            media_url=streaming.url,
            call_sid=call_sid,
            stream_sid="MZ" + call_sid[2:],
            from_number=MAYA["phone_e164"],
        )

    async def load(self, call_sid: str) -> StoredCall:
        stored = await self.store.load_call(call_sid)
        assert stored is not None
        return stored

    async def wait_for(
        self, call_sid: str, done: Callable[[StoredCall], bool], *, within: float = 15
    ) -> StoredCall:
        async def holds() -> bool:
            stored = await self.store.load_call(call_sid)
            return stored is not None and done(stored)

        with trio.fail_after(within):
            await eventually(holds, interval=0.1)
        return await self.load(call_sid)

    def column(self, call_sid: str, column: sa.Column[Any]) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(column).where(calls.c.call_sid == call_sid)).scalar_one()


@asynccontextmanager
async def cluster(
    database_url: str, behaviour: Callable[[AgentPeer], Any], root: Path
) -> AsyncIterator[Cluster]:
    store = SqlCallStore.open(database_url, pool_size=2)
    async with trio.open_nursery() as nursery:
        agent = AgentServer(behaviour)
        await nursery.start(agent.run)
        running = Cluster(database_url, agent, root, store)
        try:
            yield running
        finally:
            for instance in running.instances:
                if instance.process.returncode is None:
                    instance.kill()
                    await instance.process.wait()
            await store.aclose()
            nursery.cancel_scope.cancel()


async def seed(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        await trio.to_thread.run_sync(seed_demo_bank, engine, SEED)
    finally:
        await trio.to_thread.run_sync(engine.dispose)


def results(peer: AgentPeer) -> dict[str, managed.ClientToolResult]:
    return {result.tool_call_id: result for result in peer.of(managed.ClientToolResult)}


async def call_tool(peer: AgentPeer, tool_call_id: str, name: str, args: dict[str, object]) -> None:
    await peer.send(managed.client_tool_call(tool_call_id, name, args, expects_response=True))
    await peer.wait_for(lambda events: tool_call_id in results(peer))


async def say(peer: AgentPeer, turn: int, text: str) -> None:
    await peer.send(managed.turn_started(turn, "assistant", float(turn)))
    await peer.send(
        managed.turn_ended(
            turn, "assistant", text, interrupted=False, start_time=float(turn), end_time=turn + 0.5
        )
    )


async def freeze_a_card(peer: AgentPeer) -> None:
    """Two agent turns around a verified card freeze, then stay on the line."""
    await peer.accept_session()
    await say(peer, 1, "Hello, this is your bank.")
    await call_tool(peer, "t1", "verify_caller", {"pin": MAYA["pin"]})
    await call_tool(peer, "t2", "freeze_card", {"last4": "2207"})
    await say(peer, 2, "Your card is frozen.")
    await peer.closed.wait()


def written_while_live(stored: StoredCall) -> bool:
    """Both turns and the finished freeze are in the database while the call is in progress."""
    tools = {tool.name: tool for tool in stored.record.tool_calls}
    return (
        stored.record.status == "in_progress"
        and len(stored.record.turns) == 2
        and "freeze_card" in tools
        and tools["freeze_card"].finished_at is not None
    )


async def start_a_carried_call(
    running: Cluster, answering: Instance, streaming: Instance, call_sid: str, nursery: trio.Nursery
) -> TwilioCaller:
    """Dial ``answering``, stream to ``streaming``; return once the call is written as it goes."""
    caller = running.caller(answering, streaming, call_sid)
    answer = await caller.dial()
    assert "<Stream" in answer.text, answer.text
    await caller.connect(nursery)
    await caller.speak(audio(1))
    await running.wait_for(call_sid, written_while_live)
    return caller


async def test_webhook_on_one_instance_stream_on_another_status_to_either(
    postgres_url: str, tmp_path: Path
) -> None:
    """Acceptance 1: A answers the webhook, B carries the stream, the callback goes to A."""
    async with cluster(postgres_url, freeze_a_card, tmp_path) as running:
        a = await running.start("archer-a")
        b = await running.start("archer-b")
        await seed(postgres_url)
        call_sid = "CA" + "1a" * 16
        async with trio.open_nursery() as nursery:
            caller = await start_a_carried_call(running, a, b, call_sid, nursery)
            await caller.stop()
            await running.wait_for(call_sid, lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        status = await caller.post(
            "/twilio/status",
            {**caller.webhook_fields(), "CallStatus": "completed", "CallDuration": "7"},
        )
        assert status.status == 200
        stored = await running.load(call_sid)
        carried_by = await trio.to_thread.run_sync(running.column, call_sid, calls.c.instance_id)
        card = await trio.to_thread.run_sync(card_status, running.store, "2207")
    record = stored.record
    assert (record.status, record.end_reason) == ("completed", "caller_hangup")
    assert carried_by == "archer-b"
    assert [turn.text for turn in record.turns] == [
        "Hello, this is your bank.",
        "Your card is frozen.",
    ]
    assert [(tool.name, tool.is_error) for tool in record.tool_calls] == [
        ("verify_caller", False),
        ("freeze_card", False),
    ]
    assert all(tool.finished_at is not None for tool in record.tool_calls)
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 7)
    assert card == "frozen"


def card_status(store: SqlCallStore, last4: str) -> str:
    with store.engine.connect() as conn:
        status: str = conn.execute(
            sa.select(cards.c.status).where(cards.c.last4 == last4)
        ).scalar_one()
    return status


async def test_a_killed_instances_call_is_reaped_by_a_survivor(
    postgres_url: str, tmp_path: Path
) -> None:
    """Acceptance 2: B is SIGKILLed mid-call after a freeze and two turns; within the lease plus
    one reaper interval A has finished the row, keeping the turns and the tool calls."""
    async with cluster(postgres_url, freeze_a_card, tmp_path) as running:
        a = await running.start("archer-a")
        b = await running.start("archer-b")
        await seed(postgres_url)
        call_sid = "CA" + "2b" * 16
        async with trio.open_nursery() as nursery:
            await start_a_carried_call(running, a, b, call_sid, nursery)
            b.kill()
            killed_at = datetime.now(UTC)
            killed = trio.current_time()
            stored = await running.wait_for(
                call_sid, lambda s: s.record.status != "in_progress", within=LEASE + REAPER + 10
            )
            took = trio.current_time() - killed
            nursery.cancel_scope.cancel()
        metrics = await trio.to_thread.run_sync(http_text, a.url + "/metrics")
    record = stored.record
    assert took <= LEASE + REAPER + SLACK
    assert (record.status, record.end_reason) == ("failed", "instance_lost")
    # The end is the dead instance's last renewal: at most a heartbeat (and clock noise) before
    # the kill, never after it.
    assert record.ended_at is not None
    assert killed_at - timedelta(seconds=HEARTBEAT + 1) <= record.ended_at <= killed_at
    assert [turn.text for turn in record.turns] == [
        "Hello, this is your bank.",
        "Your card is frozen.",
    ]
    assert [tool.name for tool in record.tool_calls] == ["verify_caller", "freeze_card"]
    assert 'archer_calls_reaped_total{end_reason="instance_lost"} 1.0' in metrics


async def test_the_terminal_status_finishes_a_dead_instances_call_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Acceptance 2, second half: Twilio's callback comes before any reaper runs (A's runs only
    every minute here): the row is finished by the callback, with Twilio's status."""
    async with cluster(postgres_url, freeze_a_card, tmp_path) as running:
        a = await running.start("archer-a", reaper_interval=60)
        b = await running.start("archer-b", reaper_interval=60)
        await seed(postgres_url)
        call_sid = "CA" + "3c" * 16
        async with trio.open_nursery() as nursery:
            caller = await start_a_carried_call(running, a, b, call_sid, nursery)
            b.kill()
            await trio.sleep(LEASE + HEARTBEAT)  # B's lease lapses
            nursery.cancel_scope.cancel()
        answer = await caller.post(
            "/twilio/status",
            {**caller.webhook_fields(), "CallStatus": "completed", "CallDuration": "9"},
        )
        stored = await running.load(call_sid)  # at once: no waiting
    assert answer.status == 200
    record = stored.record
    assert (record.status, record.end_reason) == ("completed", "instance_lost")
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 9)
    assert record.ended_at is not None
    assert len(record.turns) == 2
    assert [tool.name for tool in record.tool_calls] == ["verify_caller", "freeze_card"]


async def greet_and_stay(peer: AgentPeer) -> None:
    await peer.accept_session()
    await say(peer, 1, "Hello.")
    await peer.closed.wait()


@pytest.fixture
async def postgres_behind_proxy(postgres_url: str, nursery: trio.Nursery) -> tuple[str, TcpProxy]:
    """``postgres_url`` reached through a proxy the test can cut (the database going down)."""
    url = sa.make_url(postgres_url)
    proxy = TcpProxy(target_port=url.port or 5432)
    port = await nursery.start(proxy.run)
    return url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False), proxy


def journals(spool_dir: Path) -> list[str]:
    return sorted(path.name for path in spool_dir.iterdir() if path.name.endswith(".jsonl"))


def counts(store: SqlCallStore, call_sid: str) -> tuple[int, int, int]:
    """Rows for ``call_sid`` in calls, call_turns and tool_calls."""
    with store.engine.connect() as conn:
        ids = [
            row.id
            for row in conn.execute(sa.select(calls.c.id).where(calls.c.call_sid == call_sid))
        ]
        turns = conn.execute(
            sa.select(sa.func.count()).select_from(call_turns).where(call_turns.c.call_id.in_(ids))
        ).scalar_one()
        tools = conn.execute(
            sa.select(sa.func.count()).select_from(tool_calls).where(tool_calls.c.call_id.in_(ids))
        ).scalar_one()
    return len(ids), turns, tools


async def test_a_record_spooled_by_a_dead_container_is_replayed_by_another(
    postgres_url: str, postgres_behind_proxy: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    """Acceptance 3 (and issue 19's status callback during an outage): the database is down when
    A flushes and when Twilio's status callback reaches A; both go to A's journal on the shared
    spool volume. A's process and working directory are then gone; B replays A's journal: the
    record once, the status after it; 0 lost, 0 duplicated."""
    proxied_url, proxy = postgres_behind_proxy
    async with cluster(postgres_url, greet_and_stay, tmp_path) as running:
        a = await running.start("archer-a", database_url=proxied_url)
        b = await running.start("archer-b")
        call_sid = "CA" + "4d" * 16
        caller = running.caller(a, a, call_sid)
        async with trio.open_nursery() as nursery:
            assert "<Stream" in (await caller.dial()).text
            await caller.connect(nursery)
            await caller.speak(audio(1))
            await running.wait_for(call_sid, lambda s: len(s.record.turns) == 1)
            proxy.cut()  # the database goes away for A
            await caller.stop()

            async def spooled() -> bool:
                return journals(running.spool_dir) == ["calls.archer-a.jsonl"]

            with trio.fail_after(15):
                await eventually(spooled, interval=0.1)
            nursery.cancel_scope.cancel()
        answer = await caller.post(
            "/twilio/status",
            {**caller.webhook_fields(), "CallStatus": "completed", "CallDuration": "5"},
        )
        assert answer.status == 200  # kept in the spool, not refused
        journal = running.spool_dir / "calls.archer-a.jsonl"
        kinds = [json.loads(line).get("kind", "call") for line in journal.read_text().splitlines()]
        assert kinds == ["call", "twilio_status"]
        # A's container goes: the process, and everything in its working directory.
        a.kill()
        await a.process.wait()
        shutil.rmtree(a.workdir)

        stored = await running.wait_for(
            call_sid,
            lambda s: s.record.end_reason == "caller_hangup" and s.twilio_status is not None,
        )

        async def replayed() -> bool:
            return journals(running.spool_dir) == []

        with trio.fail_after(10):
            await eventually(replayed, interval=0.1)
        rows = await trio.to_thread.run_sync(counts, running.store, call_sid)
        assert b.process.returncode is None
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert [turn.text for turn in stored.record.turns] == ["Hello."]
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 5)
    assert stored.record.ended_at is not None
    assert rows == (1, 1, 0)  # one call, one turn: nothing lost, nothing twice
