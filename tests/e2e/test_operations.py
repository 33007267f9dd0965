"""What operators see: ``/metrics`` after a real call, and ``/readyz`` through an outage."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from archer.cartesia import managed
from tests.e2e.peers import AgentPeer
from tests.e2e.tcp_proxy import TcpProxy
from tests.e2e.test_call import running_system
from tests.e2e.test_faults import postgres_behind_proxy  # noqa: F401 (a fixture)
from tests.helpers import audio, eventually


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def talk_and_use_a_tool(peer: AgentPeer) -> None:
    await peer.accept_session()
    await peer.send(managed.turn_started(1, "assistant", 0.1))
    for tag in range(120):
        await peer.send(managed.audio_output(audio(tag)))
        await trio.sleep(0.005)
    await peer.send(managed.client_tool_call("m1", "echo", {"x": "y"}, expects_response=True))
    await peer.send(managed.audio_output_clear())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_metrics_after_a_call(database_url: str) -> None:
    """The call, its frames, sampled latencies, barge-in and tool call are counted; no ids."""
    async with running_system(database_url, talk_and_use_a_tool) as system:
        caller = system.caller
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            for tag in range(120):
                await caller.speak(audio(tag))
                await trio.sleep(0.005)
            await peer.wait_for(lambda events: bool(peer.of(managed.ClientToolResult)))
            await caller.wait_for(lambda frames: any(f["event"] == "clear" for f in frames))
            await caller.stop()
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        status, text = await trio.to_thread.run_sync(get, caller.archer_url + "/metrics")
    assert status == 200
    values = samples(text)
    record = stored.record

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("archer_calls_total", status="completed", end_reason="caller_hangup") == 1
    assert value("archer_calls_active") == 0
    assert value("archer_frames_total", direction="to_agent", outcome="sent") == record.frames_in
    assert value("archer_frames_total", direction="to_caller", outcome="sent") == record.frames_out
    assert value("archer_frame_latency_seconds_count", direction="to_agent") >= 2
    assert value("archer_frame_latency_seconds_count", direction="to_caller") >= 2
    assert value("archer_barge_ins_total") == 1
    assert value("archer_tool_calls_total", tool="other", outcome="ok") == 1
    assert value("archer_tool_latency_seconds_count", tool="other") == 1
    assert value("archer_agent_setup_seconds_count") == 1
    assert value("archer_call_duration_seconds_count") == 1
    assert value("archer_db_operation_seconds_count", operation="save_call") >= 1
    for _name, labels in values:
        for _, label_value in labels:
            assert caller.call_sid not in label_value
            assert caller.stream_sid not in label_value
            assert "5555550" not in label_value


async def test_readyz_follows_the_database_down_and_back(
    postgres_behind_proxy: tuple[str, TcpProxy],  # noqa: F811
) -> None:
    """/readyz is 200, then 503 with PostgreSQL unreachable, then 200 once it is back."""
    url, proxy = postgres_behind_proxy

    async def unused(peer: AgentPeer) -> None:
        raise AssertionError("no call in this test")

    async with running_system(url, unused) as system:
        base = system.caller.archer_url

        async def readiness(want: int) -> bool:
            return (await trio.to_thread.run_sync(get, base + "/readyz"))[0] == want

        assert await readiness(200)
        proxy.cut()
        with trio.fail_after(10):
            await eventually(lambda: readiness(503))
        _, body = await trio.to_thread.run_sync(get, base + "/readyz")
        assert "database" in body
        proxy.restore()
        with trio.fail_after(10):
            await eventually(lambda: readiness(200))
