"""No secret reaches a log line or a stored argument, over a whole call with the real tools.

The Twilio auth token, the Cartesia API key, a caller's PIN and full phone number are known;
every line Archer renders during the call (structlog and the standard library alike, as JSON)
and every stored tool argument is searched for them.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog
import trio

from archer.cartesia import managed
from archer.db.seed import seed_demo_bank
from archer.logs import configure_logging
from tests.e2e.peers import AgentPeer
from tests.e2e.test_call import AUTH_TOKEN, running_system

SEED = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
JAMES = json.loads(SEED.read_text())["customers"][1]  # PIN 2468, +15555550102


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_whole_call_leaks_no_secret(database_url: str) -> None:
    """Token, API key, PIN and the caller's full number appear in no log line and no argument."""
    pin, phone = JAMES["pin"], JAMES["phone_e164"]

    async def verify_then_balance(peer: AgentPeer) -> None:
        await peer.accept_session()
        for tool_call_id, name, arguments in (
            ("p1", "verify_caller", {"pin": pin}),
            ("p2", "get_account_balance", {}),
        ):
            await peer.send(
                managed.client_tool_call(tool_call_id, name, arguments, expects_response=True)
            )
            await peer.wait_for(
                lambda events, tool_call_id=tool_call_id: any(
                    isinstance(e, managed.ClientToolResult) and e.tool_call_id == tool_call_id
                    for e in events
                )
            )

    rendered = io.StringIO()
    async with running_system(
        database_url, verify_then_balance, tools=None, pin_entry="both"
    ) as system:
        configure_logging(
            "debug",
            "json",
            stream=rendered,
            cache=False,
            secrets=(AUTH_TOKEN, system.settings.cartesia_api_key),
        )
        try:
            await trio.to_thread.run_sync(seed_demo_bank, system.store.engine, SEED)
            caller = system.caller
            caller.from_number = phone
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                peer = await system.peer()
                await peer.wait_for(lambda events: len(peer.of(managed.ClientToolResult)) == 2)
                await caller.stop()
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        finally:
            structlog.reset_defaults()
            logging.getLogger().handlers.clear()

    lines = rendered.getvalue().splitlines()
    assert any('"call.finished"' in line for line in lines)  # the call's lines were captured
    assert all(json.loads(line) for line in lines)
    text = rendered.getvalue()
    for secret in (AUTH_TOKEN, system.settings.cartesia_api_key, phone):
        assert secret not in text, secret
    for shaped_like_the_pin in (f'"{pin}"', f"'{pin}'", f"pin={pin}", f": {pin}"):
        assert shaped_like_the_pin not in text
    [verify, _] = sorted(stored.record.tool_calls, key=lambda tool: tool.tool_call_id)
    assert json.loads(verify.result or "")["verified"] is True  # the PIN did its job ...
    assert verify.arguments == {"pin": "***"}  # ... and was never stored
    assert pin not in json.dumps([dict(tool.arguments) for tool in stored.record.tool_calls])
