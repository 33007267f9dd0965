"""Contract: ``AgentStream``, one suite against ``FakeAgent`` and both real adapters.

Layer: contract tests (acceptance 3 of issue 18). ``run_call`` is tested against
``tests.fakes.agent.FakeAgent``; this suite proves that fake behaves like the two adapters it
stands in for — ``archer.cartesia.managed_client`` (Managed Agents) and
``archer.cartesia.line_client`` (Line Calls API) — for everything the call relies on: agent
events arrive in order as the call's nouns, what the call sends reaches the agent, a clean
close is an ``AgentHangup``, an abnormal close is ``AgentClosedError`` with its code, and a ping
is answered.

The real adapters run over loopback against a trio-websocket server that plays the agent from
Cartesia's documents (../shared/reference/cartesia-agents.md §2): its JSON is written here by
hand, never with Archer's builders, and what Archer sends is read back with ``json.loads``.
So these are also the adapters' unit tests. Real sockets: real clock, each test under
``fail_after``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Protocol

import attrs
import pytest
import trio
import trio_websocket

from archer.call.events import AgentAudio, AgentClear, AgentDtmf, AgentHangup, ToolCallRequest
from archer.call.ports import AgentSession, AgentStream
from archer.cartesia.line_client import CartesiaLineConnector
from archer.cartesia.managed_client import CartesiaManagedConnector
from archer.errors import AgentClosedError
from tests.fakes.agent import FakeAgent, FakeAgentConnector

TIMEOUT = 10
SESSION = AgentSession(
    call_sid="CA" + "0" * 32, caller_number="+15555550142", customer_id=7, audio_format="mulaw_8000"
)


class AgentPeer(Protocol):
    """The agent's side, driven by the test."""

    #: The id the agent gave the session (``AgentStream.agent_call_id``).
    call_id: str

    async def say(self, payload: str) -> None: ...
    async def clear(self) -> None: ...
    async def dtmf(self, digit: str) -> None: ...
    async def call_tool(self, tool_call_id: str, name: str, arguments: dict[str, Any]) -> None: ...
    async def hang_up(self) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...
    async def received(self, count: int) -> list[tuple[str, object]]:
        """The first ``count`` things the call sent, as ``FakeAgent.received`` writes them."""
        ...


# --- the fake ------------------------------------------------------------------------------


@attrs.define
class FakePeer:
    agent: FakeAgent
    call_id: str

    async def say(self, payload: str) -> None:
        self.agent.say(payload)

    async def clear(self) -> None:
        self.agent.clear()

    async def dtmf(self, digit: str) -> None:
        self.agent.dtmf(digit)

    async def call_tool(self, tool_call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.agent.call_tool(tool_call_id, name, arguments)

    async def hang_up(self) -> None:
        self.agent.hang_up()

    async def close(self, code: int, reason: str) -> None:
        # How the fake is told to fail; the contract is that it fails like the real thing.
        self.agent.emit(AgentClosedError(code, reason))

    async def received(self, count: int) -> list[tuple[str, object]]:
        # The fake records a send before the send returns, as a socket has written it by then.
        await trio.lowlevel.checkpoint()
        return self.agent.received[:count]


@asynccontextmanager
async def fake_pair() -> AsyncIterator[tuple[AgentStream, AgentPeer]]:
    connector = FakeAgentConnector()
    async with connector.open_session(SESSION) as agent:
        yield agent, FakePeer(agent, call_id=agent.agent_call_id)


# --- the real adapters over loopback ---------------------------------------------------------


@attrs.define
class _LoopbackAgent:
    """A trio-websocket server playing a Cartesia agent in one protocol's JSON."""

    call_id: str
    #: "managed" (``type`` envelope) or "line" (``event`` envelope with a ``stream_id``).
    protocol: str
    websocket: trio_websocket.WebSocketConnection | None = None
    handshake: dict[str, Any] = attrs.Factory(dict)
    ready: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)
    _received: list[tuple[str, object]] = attrs.Factory(list)

    async def serve(self, request: trio_websocket.WebSocketRequest) -> None:
        websocket = await request.accept()
        self.handshake = json.loads(await websocket.get_message())
        if self.protocol == "managed":
            assert self.handshake["type"] == "session_create"
            await websocket.send_message(
                json.dumps(
                    {
                        "type": "session_ready",
                        "call_id": self.call_id,
                        "agent_id": "agent_contract",
                        "agent_version_id": "av_contract",
                        "audio": {"input_format": "mulaw_8000", "output_delivery": "speaking_pace"},
                    }
                )
            )
        else:
            assert self.handshake["event"] == "start"
            await websocket.send_message(
                json.dumps(
                    {
                        "event": "ack",
                        "stream_id": self.call_id,
                        "config": {"input_format": "mulaw_8000"},
                    }
                )
            )
        self.websocket = websocket
        self.ready.set()
        await self.done.wait()

    async def _send(self, managed: dict[str, Any], line: dict[str, Any]) -> None:
        assert self.websocket is not None
        if self.protocol == "managed":
            await self.websocket.send_message(json.dumps(managed))
        else:
            await self.websocket.send_message(json.dumps({**line, "stream_id": self.call_id}))

    async def say(self, payload: str) -> None:
        await self._send(
            {"type": "audio_output", "audio": payload},
            {"event": "media_output", "media": {"payload": payload}},
        )

    async def clear(self) -> None:
        await self._send({"type": "audio_output_clear"}, {"event": "clear"})

    async def dtmf(self, digit: str) -> None:
        await self._send({"type": "dtmf_output", "digit": digit}, {"event": "dtmf", "dtmf": digit})

    async def call_tool(self, tool_call_id: str, name: str, arguments: dict[str, Any]) -> None:
        await self._send(
            {
                "type": "client_tool_call",
                "tool_call_id": tool_call_id,
                "tool_name": name,
                "parameters": arguments,
                "expects_response": True,
            },
            # Line has no tool channel; Archer's convention rides on ``custom`` (line.py).
            {
                "event": "custom",
                "metadata": {"archer_tool": name, "id": tool_call_id, "arguments": arguments},
            },
        )

    async def hang_up(self) -> None:
        assert self.websocket is not None
        await self.websocket.aclose(1000, "call ended by agent")

    async def close(self, code: int, reason: str) -> None:
        assert self.websocket is not None
        await self.websocket.aclose(code, reason)

    async def received(self, count: int) -> list[tuple[str, object]]:
        assert self.websocket is not None
        while len(self._received) < count:
            self._received.append(self._read(json.loads(await self.websocket.get_message())))
        return self._received[:count]

    def _read(self, message: dict[str, Any]) -> tuple[str, object]:
        if self.protocol == "managed":
            match message["type"]:
                case "audio_input":
                    return ("audio", message["audio"])
                case "dtmf_input":
                    return ("dtmf", message["digit"])
                case "client_tool_result":
                    return (
                        "tool_result",
                        (message["tool_call_id"], message["result"], message["is_error"]),
                    )
        else:
            assert message["stream_id"] == self.call_id
            match message["event"]:
                case "media_input":
                    return ("audio", message["media"]["payload"])
                case "dtmf":
                    return ("dtmf", message["dtmf"])
                case "custom":
                    metadata = message["metadata"]
                    return (
                        "tool_result",
                        (metadata["archer_tool_result"], metadata["result"], metadata["is_error"]),
                    )
        raise AssertionError(f"unexpected message from Archer: {message}")


def _connector(protocol: str, port: int) -> CartesiaManagedConnector | CartesiaLineConnector:
    settings: dict[str, Any] = {
        "ws_url": f"ws://127.0.0.1:{port}",
        "agent_id": "agent_contract",
        "api_key": "sk_contract",
        "version": "2025-04-16",
        "ready_timeout": 5.0,
        "max_message_bytes": 1 << 20,
    }
    if protocol == "managed":
        return CartesiaManagedConnector(**settings)
    return CartesiaLineConnector(**settings)


def real_pair(protocol: str) -> Callable[[], AbstractAsyncContextManager[Any]]:
    @asynccontextmanager
    async def pair() -> AsyncIterator[tuple[AgentStream, AgentPeer]]:
        peer = _LoopbackAgent(call_id=f"{protocol}_call_0001", protocol=protocol)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, peer.serve, "127.0.0.1", 0, None)
            )
            async with _connector(protocol, server.port).open_session(SESSION) as stream:
                await peer.ready.wait()
                yield stream, peer
            peer.done.set()
            nursery.cancel_scope.cancel("the contract test is over")

    return pair


PAIRS = {"fake": fake_pair, "managed": real_pair("managed"), "line": real_pair("line")}


@pytest.fixture(params=sorted(PAIRS))
def open_pair(request: pytest.FixtureRequest) -> Callable[[], AbstractAsyncContextManager[Any]]:
    return PAIRS[request.param]


# --- the contract ------------------------------------------------------------------------------


async def test_agent_events_arrive_in_order_as_the_calls_nouns(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[AgentStream, AgentPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            assert stream.agent_call_id == peer.call_id
            await peer.say("AAEC")
            await peer.clear()
            await peer.dtmf("5")
            await peer.call_tool("tc_1", "get_balance", {"account": "checking"})
            assert await stream.receive() == AgentAudio("AAEC")
            assert await stream.receive() == AgentClear()
            assert await stream.receive() == AgentDtmf("5")
            assert await stream.receive() == ToolCallRequest(
                tool_call_id="tc_1",
                name="get_balance",
                arguments={"account": "checking"},
                expects_response=True,
            )


async def test_what_the_call_sends_reaches_the_agent_in_order(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[AgentStream, AgentPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await stream.send_audio("//79")
            await stream.send_dtmf("#")
            await stream.send_tool_result("tc_1", '{"balance": "12.00"}', is_error=False)
            await stream.send_tool_result("tc_2", "no such account", is_error=True)
            assert await peer.received(4) == [
                ("audio", "//79"),
                ("dtmf", "#"),
                ("tool_result", ("tc_1", '{"balance": "12.00"}', False)),
                ("tool_result", ("tc_2", "no such account", True)),
            ]


async def test_a_clean_close_is_a_hangup_event_not_an_error(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[AgentStream, AgentPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await peer.say("AAEC")
            await peer.hang_up()
            assert await stream.receive() == AgentAudio("AAEC")
            assert isinstance(await stream.receive(), AgentHangup)


async def test_an_abnormal_close_raises_agent_closed_with_its_code(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[AgentStream, AgentPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, peer):
            await peer.close(1011, "internal error")
            with pytest.raises(AgentClosedError) as closed:
                await stream.receive()
            assert (closed.value.code, closed.value.reason) == (1011, "internal error")


async def test_a_ping_is_answered(
    open_pair: Callable[[], AbstractAsyncContextManager[tuple[AgentStream, AgentPeer]]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_pair() as (stream, _peer):
            await stream.ping()
