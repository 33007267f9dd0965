"""The Cartesia emulator's session variables (issue 22): what an agent script needs at session
start, the words it says from them, and an id it passes back to a tool as a number.

Both protocols, raw clients over loopback (the helpers of the two protocols' emulator tests):
Managed ``dynamic_variables`` and Line ``start`` metadata are recorded, fill a ``say``'s
``text`` and a tool's ``{name:int}`` argument, and a session without a variable the script
needs is refused as Cartesia refuses it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from archer.cartesia import line, managed
from archer.emulators.cartesia.script import AgentScriptError, Say, parse_agent_script
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from tests.emulators import test_cartesia_emulator as managed_tests
from tests.emulators import test_cartesia_line_emulator as line_tests

FACTS_NEEDED = ["merchant", "amount", "transaction_id"]
STEPS: list[dict[str, Any]] = [
    {"say": "short", "interruptible": False, "text": "Did you pay {amount} at {merchant}?"},
    {
        "tool": {
            "name": "review_transaction",
            "arguments": {"transaction_id": "{transaction_id:int}", "note": "id {transaction_id}"},
        }
    },
]


@asynccontextmanager
async def running() -> AsyncIterator[managed_tests.Agent]:
    lines: list[str] = []
    script = parse_agent_script({"session_variables": FACTS_NEEDED, "steps": STEPS}, name="facts")
    emulator = CartesiaEmulator(
        api_key=managed_tests.API_KEY,
        script=script,
        clips=managed_tests.CLIPS.__getitem__,
        progress=lines.append,
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_cartesia_emulator, emulator))
        yield managed_tests.Agent(emulator, url, lines)
        nursery.cancel_scope.cancel()


def test_a_script_names_its_session_variables_and_says_text() -> None:
    script = parse_agent_script({"session_variables": FACTS_NEEDED, "steps": STEPS}, name="x")
    assert script.session_variables == tuple(FACTS_NEEDED)
    assert script.steps[0] == Say("short", False, "Did you pay {amount} at {merchant}?")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"steps": STEPS}, r"placeholder \{amount\} names no session variable"),
        ({"session_variables": ["bad-name"], "steps": STEPS}, "list of variable names"),
        ({"session_variables": "merchant", "steps": STEPS}, "list of variable names"),
        (
            {"session_variables": FACTS_NEEDED, "steps": [{"say": "short", "text": ""}]},
            "'text' must be a non-empty string",
        ),
    ],
)
def test_a_placeholder_must_name_a_known_variable(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(AgentScriptError, match=problem):
        parse_agent_script(data, name="x")


async def test_managed_variables_fill_the_turn_and_the_tool_call() -> None:
    async with running() as agent, managed_tests.connect(agent) as client:
        await client.send(
            managed.session_create(
                input_format="mulaw_8000",
                dynamic_variables={
                    "merchant": "Example Store",
                    "amount": "412.50",
                    "transaction_id": 42,
                },
            )
        )
        await client.wait_for(lambda events: bool(client.of(managed.ClientToolCall)))
        [turn] = [e for e in client.of(managed.TurnEnded) if e.role == "assistant"]
        assert turn.text == "Did you pay 412.50 at Example Store?"
        [call] = client.of(managed.ClientToolCall)
        assert call.parameters == {"transaction_id": 42, "note": "id 42"}
        assert agent.session.dynamic_variables["transaction_id"] == 42
        assert agent.session.variables["merchant"] == "Example Store"


async def test_managed_session_without_a_needed_variable_is_refused() -> None:
    async with running() as agent, managed_tests.connect(agent) as client:
        await client.send(
            managed.session_create(input_format="mulaw_8000", dynamic_variables={"amount": "1.00"})
        )
        close = await client.wait_closed()
        [error] = client.of(managed.Error)
        assert (error.code, error.fatal) == ("missing_dynamic_variables", True)
        assert "merchant" in error.message
        assert "transaction_id" in error.message
        assert close.code == 1008
        assert not client.of(managed.SessionReady)


async def test_line_metadata_fills_the_words_and_the_tool_call() -> None:
    async with running() as agent, line_tests.connect(agent) as client:
        await client.send(
            line.start(
                input_format="mulaw_8000",
                metadata={"merchant": "Example Store", "amount": "412.50", "transaction_id": "42"},
                stream_id=client.stream_id,
            )
        )
        await client.wait_for(lambda: bool(client.of(line.Custom)))
        [custom] = client.of(line.Custom)
        assert custom.metadata["archer_tool"] == "review_transaction"
        assert custom.metadata["arguments"] == {"transaction_id": 42, "note": "id 42"}
        assert agent.session.metadata["merchant"] == "Example Store"
        assert "agent says: Did you pay 412.50 at Example Store?" in agent.lines


async def test_line_start_without_a_needed_variable_closes_1008() -> None:
    async with running() as agent, line_tests.connect(agent) as client:
        await client.send(
            line.start(input_format="mulaw_8000", metadata={}, stream_id=client.stream_id)
        )
        close = await client.wait_closed()
        assert close.code == 1008
        assert "start metadata lacks merchant, amount, transaction_id" in (close.reason or "")
        assert not client.of(line.Ack)
        assert json.dumps(agent.session.metadata) == "{}"


def test_the_shipped_fraud_alert_scripts_load_with_their_clips() -> None:
    """The agent asks for the PIN by keypad before it names the payment, then records a no."""
    from archer.audio import clips
    from archer.emulators.cartesia.script import CallTool, load_agent_script
    from archer.emulators.twilio.script import Press, load_caller_script

    agent = load_agent_script("fraud_alert")
    assert set(agent.session_variables) >= {"merchant", "amount", "currency", "card_last4"}
    assert agent.clip_names() <= clips.CLIP_NAMES
    tools = [step for step in agent.steps if isinstance(step, CallTool)]
    assert [t.name for t in tools] == ["collect_pin", "review_transaction", "end_call"]
    assert tools[1].arguments == {"transaction_id": "{transaction_id:int}", "recognised": False}
    said = [step for step in agent.steps if isinstance(step, Say)]
    assert "{merchant}" in (said[1].text or "")
    assert "{amount}" in (said[1].text or "")
    callee = load_caller_script("callee_fraud_alert")
    assert Press("1234#", 300) in callee.steps
    assert set(callee.clips) <= clips.CLIP_NAMES
