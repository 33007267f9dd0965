"""``archer.cartesia.managed_client`` over a loopback WebSocket: the handshake and the mapping.

What ``tests/contract/test_agent_stream.py`` holds every ``AgentStream`` to is not repeated
here; these are the Managed Agents adapter's own duties: what it tells the agent on connecting
(URL, headers, ``session_create``), each way a session fails to start (with the ``end_reason``
the call records), turn events, errors fatal or not, and unknown events skipped. The agent is a
trio-websocket server speaking the documented JSON by hand
(../shared/reference/cartesia-agents.md §2.B). Real sockets: real clock, under ``fail_after``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from archer.call.events import AgentAudio, AgentNotice, TurnEnded, TurnStarted, TurnTextDelta
from archer.call.ports import AgentSession
from archer.cartesia.managed_client import CartesiaManagedConnector
from archer.errors import AgentFatalError, AgentUnavailableError
from tests.cartesia.loopback import serve_agent
from tests.helpers import free_port

TIMEOUT = 10
SESSION = AgentSession(
    call_sid="CA" + "1" * 32,
    caller_number="+15555550142",
    customer_id=None,
    audio_format="pcm_16000",
)
READY = {
    "type": "session_ready",
    "call_id": "ac_loopback01",
    "agent_id": "agent_a/b",
    "agent_version_id": "av_1",
    "audio": {"input_format": "pcm_16000", "output_delivery": "speaking_pace"},
}


def connector(ws_url: str, *, ready_timeout: float = 5.0) -> CartesiaManagedConnector:
    return CartesiaManagedConnector(
        ws_url=ws_url,
        agent_id="agent_a/b",
        api_key="sk_managed_secret",
        version="2025-04-16",
        ready_timeout=ready_timeout,
        max_message_bytes=1 << 20,
    )


async def send(websocket: trio_websocket.WebSocketConnection, **message: Any) -> None:
    await websocket.send_message(json.dumps(message))


async def test_the_handshake_says_who_calls_and_in_which_format() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **READY)
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, seen),
            connector(url).open_session(SESSION) as stream,
        ):
            assert stream.agent_call_id == "ac_loopback01"
            assert stream.reports_turns
    assert seen.path == "/v1/agents/websocket/agent_a%2Fb?cartesia_version=2025-04-16"
    assert seen.headers["x-api-key"] == "sk_managed_secret"
    assert seen.headers["cartesia-version"] == "2025-04-16"
    assert seen.first["type"] == "session_create"
    assert seen.first["audio"]["input_format"] == "pcm_16000"
    assert seen.first["dynamic_variables"] == {
        "call_sid": SESSION.call_sid,
        "caller_number": "+15555550142",
        "customer_id": "",  # always present, so a prompt naming it never fails to start
    }


async def test_an_outbound_calls_facts_are_dynamic_variables_with_their_types() -> None:
    facts = {"call_purpose": "fraud_alert", "transaction_id": 42, "amount": "412.50"}

    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **READY)
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, seen),
            connector(url).open_session(attrs.evolve(SESSION, facts=facts)),
        ):
            pass
    assert seen.first["dynamic_variables"] == {
        "call_sid": SESSION.call_sid,
        "caller_number": "+15555550142",
        "customer_id": "",
        **facts,  # transaction_id stays a number: Managed variables may be numbers
    }


async def test_an_error_instead_of_session_ready_is_a_rejection() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, type="error", code="agent_not_found", message="no", fatal=True)
        await trio.sleep_forever()

    # Raised inside trio-websocket's nursery, so it arrives in a group (run_call uses except*).
    refused = pytest.RaisesGroup(
        pytest.RaisesExc(
            AgentUnavailableError,
            match="agent_not_found",
            check=lambda error: error.end_reason == "agent_rejected",
        ),
        flatten_subgroups=True,
    )
    with trio.fail_after(TIMEOUT):
        async with serve_agent(agent) as (url, _seen):
            with refused:
                async with connector(url).open_session(SESSION):
                    pytest.fail("a refused session must not open")


async def test_a_refused_upgrade_is_a_rejection() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await trio.sleep_forever()  # never runs: the upgrade is refused

    with trio.fail_after(TIMEOUT):
        async with serve_agent(agent, reject_status=401) as (url, _seen):
            with pytest.raises(AgentUnavailableError) as refused:
                async with connector(url).open_session(SESSION):
                    pytest.fail("a refused upgrade must not open")
    assert refused.value.end_reason == "agent_rejected"
    assert "401" in str(refused.value)


async def test_nobody_listening_is_unreachable() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(AgentUnavailableError) as unreachable:
        async with connector(f"ws://127.0.0.1:{free_port()}").open_session(SESSION):
            pytest.fail("nothing listens there")
    assert unreachable.value.end_reason == "agent_unreachable"


async def test_no_session_ready_in_time_is_a_handshake_timeout() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with serve_agent(agent) as (url, _seen):
            with pytest.raises(AgentUnavailableError) as late:
                async with connector(url, ready_timeout=0.3).open_session(SESSION):
                    pytest.fail("the agent never said ready")
    assert late.value.end_reason == "agent_handshake_timeout"


async def test_turns_notices_and_unknown_events_map_to_the_calls_nouns() -> None:
    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await send(websocket, **READY)
        await send(websocket, type="turn_started", turn=1, role="assistant", start_time=0.5)
        await send(websocket, type="turn_output_text_delta", turn=1, role="assistant", text="Hi ")
        await send(websocket, type="a_future_event", whatever=1)
        await send(
            websocket,
            type="turn_ended",
            turn=1,
            role="assistant",
            text="Hi there.",
            interrupted=True,
            start_time=0.5,
            end_time=1.25,
            tool_calls=[],
        )
        await send(websocket, type="error", code="invalid_event", message="bad dtmf", fatal=False)
        await send(websocket, type="audio_output", audio="AAEC")
        await send(websocket, type="error", code="internal", message="gone", fatal=True)
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with (
            serve_agent(agent) as (url, _seen),
            connector(url).open_session(SESSION) as stream,
        ):
            assert await stream.receive() == TurnStarted(1, "assistant", 0.5)
            assert await stream.receive() == TurnTextDelta(1, "Hi ")
            assert await stream.receive() == TurnEnded(
                turn=1,
                role="assistant",
                text="Hi there.",
                interrupted=True,
                start_time=0.5,
                end_time=1.25,
            )
            assert await stream.receive() == AgentNotice("invalid_event", "bad dtmf")
            assert await stream.receive() == AgentAudio("AAEC")
            with pytest.raises(AgentFatalError) as fatal:
                await stream.receive()
            assert fatal.value.code == "internal"
