"""``archer.cartesia.line_client`` over a loopback WebSocket: the handshake and the mapping.

What ``tests/contract/test_agent_stream.py`` holds every ``AgentStream`` to is not repeated
here; these are the Line (Calls API) adapter's own duties: what it tells the agent on connecting
(URL, headers, ``start`` with the caller and the overrides), the ``stream_id`` of ``ack`` on
everything it sends, a refusal, ``custom`` data and ``transfer_call`` as the call's nouns, and the
two kinds of clean close (a hang-up; the idle timeout, which is its own end). The agent is a
trio-websocket server speaking the documented JSON by hand
(../shared/reference/cartesia-agents.md §2.A). Real sockets: real clock, under ``fail_after``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from archer.call.events import AgentCustom, AgentHangup, AgentNotice, AgentTransfer
from archer.call.ports import AgentSession
from archer.cartesia.line_client import CartesiaLineConnector
from archer.errors import AgentIdleError, AgentUnavailableError
from tests.cartesia.loopback import serve_agent

TIMEOUT = 10
STREAM_ID = "line-stream-7"
SESSION = AgentSession(
    call_sid="CA" + "2" * 32,
    caller_number="+15555550142",
    customer_id=42,
    audio_format="mulaw_8000",
)
ACK = {"event": "ack", "stream_id": STREAM_ID, "config": {"input_format": "mulaw_8000"}}


def connector(ws_url: str) -> CartesiaLineConnector:
    return CartesiaLineConnector(
        ws_url=ws_url,
        agent_id="agent_line",
        api_key="sk_line_secret",
        version="2025-04-16",
        ready_timeout=5.0,
        max_message_bytes=1 << 20,
        voice_id="voice-1",
        introduction="Hello from the bank.",
    )


async def send(websocket: trio_websocket.WebSocketConnection, **message: Any) -> None:
    await websocket.send_message(json.dumps(message))


async def test_start_names_the_caller_and_every_send_carries_the_acked_stream_id() -> None:
    sent: list[dict[str, Any]] = []

    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **ACK)
        for _ in range(3):
            sent.append(json.loads(await websocket.get_message()))
        await websocket.aclose(1000, "call ended by agent")

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, seen),
            connector(url).open_session(SESSION) as stream,
        ):
            assert stream.agent_call_id == STREAM_ID
            assert not stream.reports_turns
            await stream.send_audio("//79")
            await stream.send_dtmf("3")
            await stream.send_tool_result("tc_9", "done", is_error=False)
            assert await stream.receive() == AgentHangup("call ended by agent")
    assert seen.path == "/agents/stream/agent_line?cartesia_version=2025-04-16"
    assert seen.headers["x-api-key"] == "sk_line_secret"
    assert seen.first["event"] == "start"
    assert seen.first["config"]["input_format"] == "mulaw_8000"
    assert seen.first["config"]["voice_id"] == "voice-1"
    assert seen.first["metadata"] == {
        "from": "+15555550142",
        "call_sid": SESSION.call_sid,
        "customer_id": "42",
    }
    assert [message["stream_id"] for message in sent] == [STREAM_ID] * 3
    assert [message["event"] for message in sent] == ["media_input", "dtmf", "custom"]
    assert sent[2]["metadata"] == {
        "archer_tool_result": "tc_9",
        "result": "done",
        "is_error": False,
    }


async def test_an_outbound_calls_facts_are_start_metadata_as_strings() -> None:
    facts = {"call_purpose": "fraud_alert", "transaction_id": 42, "amount": "412.50"}

    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **ACK)
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, seen),
            connector(url).open_session(attrs.evolve(SESSION, facts=facts)),
        ):
            pass
    assert seen.first["metadata"] == {
        "from": "+15555550142",
        "call_sid": SESSION.call_sid,
        "customer_id": "42",
        "call_purpose": "fraud_alert",
        "transaction_id": "42",  # Line metadata is string to string
        "amount": "412.50",
    }


async def test_an_error_instead_of_ack_is_a_rejection() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, type="error", status_code=404, error_code="not_found", message="no")
        await trio.sleep_forever()

    # Raised inside trio-websocket's nursery, so it arrives in a group (run_call uses except*).
    refused = pytest.RaisesGroup(
        pytest.RaisesExc(
            AgentUnavailableError, check=lambda error: error.end_reason == "agent_rejected"
        ),
        flatten_subgroups=True,
    )
    with trio.fail_after(TIMEOUT):
        async with serve_agent(agent) as (url, _seen):
            with refused:
                async with connector(url).open_session(SESSION):
                    pytest.fail("a refused stream must not open")


async def test_custom_data_transfers_and_notices_are_the_calls_nouns() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **ACK)
        await send(websocket, event="custom", stream_id=STREAM_ID, metadata={"agent_state": "x"})
        await send(
            websocket,
            event="transfer_call",
            stream_id=STREAM_ID,
            transfer={"target_phone_number": "+14155550100"},
        )
        await send(websocket, event="a_future_event", stream_id=STREAM_ID)
        await send(websocket, type="error", status_code=400, error_code="bad", message="no")
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, _seen),
            connector(url).open_session(SESSION) as stream,
        ):
            assert await stream.receive() == AgentCustom({"agent_state": "x"})
            assert await stream.receive() == AgentTransfer("+14155550100")
            notice = await stream.receive()
            assert isinstance(notice, AgentNotice)


async def test_the_idle_timeout_close_is_its_own_end_not_a_hangup() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **ACK)
        await websocket.aclose(1000, "connection idle timeout")

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, _seen),
            connector(url).open_session(SESSION) as stream,
        ):
            with pytest.raises(AgentIdleError):
                await stream.receive()
