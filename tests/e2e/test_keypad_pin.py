"""Issue 21: the PIN is keyed, collected and checked by Archer, and found nowhere else.

Real hypercorn, real websockets over loopback, the real banking tools and a real database. The
agent (Managed protocol) asks for the PIN and calls ``collect_pin``; while its lead-in plays the
caller starts keying, says something aloud, keys the rest and ``#``. Then every byte the agent
received, every table, the spool, every log line and ``/metrics`` are searched for the PIN.
Hypothesis varies the PIN (a few examples: each is a whole call). The Line protocol's keypad
capture is shown by ``archer demo --protocol line`` (``tests/e2e/test_demo.py``), whose check
fails if the agent received any digit.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archer.bank.pins import hash_pin
from archer.cartesia import managed
from archer.db.seed import seed_demo_bank
from archer.db.tables import customers, metadata
from archer.logs import configure_logging
from archer.settings import CallLimits
from tests.e2e.peers import AgentPeer
from tests.e2e.test_call import running_system
from tests.helpers import audio

SEED = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
MAYA = json.loads(SEED.read_text())["customers"][0]
LIMITS = CallLimits(agent_ready_timeout=2.0, flush_timeout=5.0, twilio_media_timeout=60.0)


def voice(tag: int) -> str:
    """Caller audio that is not silence, and whose base64 holds no digit."""
    return audio(0x21 + tag)


def non_silent(payload: str) -> bool:
    return bool(set(base64.b64decode(payload)) - {0xFF, 0x7F})


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def keypad_call(database_url: str, pin: str) -> None:
    """One whole call in which Maya keys ``pin`` (her PIN for this call); asserts as it goes."""
    tool_call_at: list[int] = []

    async def ask_for_the_pin(peer: AgentPeer) -> None:
        await peer.accept_session()
        await peer.wait_for(lambda events: len(peer.of(managed.AudioInput)) >= 3)
        tool_call_at.append(len(peer.received))
        await peer.send(managed.client_tool_call("pin1", "collect_pin", {}, expects_response=True))
        await peer.send(managed.turn_started(1, "assistant", 1.0))
        for tag in range(25):  # the lead-in: "please key your PIN, then hash", half a second
            await peer.send(managed.audio_output(audio(100 + tag)))
        await peer.send(
            managed.turn_ended(
                1,
                "assistant",
                "Please key your PIN, then hash.",
                interrupted=False,
                start_time=1.0,
                end_time=1.5,
            )
        )
        await peer.closed.wait()

    rendered = io.StringIO()
    async with running_system(
        database_url, ask_for_the_pin, tools=None, limits=LIMITS, dtmf_to_agent=False
    ) as system:
        configure_logging("debug", "json", stream=rendered, cache=False)
        try:
            await trio.to_thread.run_sync(seed_demo_bank, system.store.engine, SEED)

            def set_pin() -> None:
                with system.store.engine.begin() as conn:
                    conn.execute(
                        sa.update(customers)
                        .where(customers.c.phone_e164 == MAYA["phone_e164"])
                        .values(pin_hash=hash_pin(pin, iterations=1000))
                    )

            await trio.to_thread.run_sync(set_pin)
            caller = system.caller
            caller.from_number = MAYA["phone_e164"]
            caller.call_sid = "CA" + secrets.token_hex(16)  # a new call for each example
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                peer = await system.peer()
                for tag in range(3):
                    await caller.speak(voice(tag))
                await peer.wait_for(lambda events: bool(tool_call_at))
                await caller.wait_for(lambda frames: sum(f["event"] == "media" for f in frames) > 5)
                half = len(pin) // 2
                for key in pin[:half]:  # while the lead-in still plays
                    await caller.press(key)
                    await caller.speak(voice(3))
                for tag in range(5):  # and the PIN said aloud, too
                    await caller.speak(voice(4 + tag))
                for key in pin[half:] + "#":
                    await caller.press(key)
                    await caller.speak(voice(9))
                await peer.wait_for(lambda events: bool(peer.of(managed.ClientToolResult)))
                result_at = next(
                    i
                    for i, e in enumerate(peer.received)
                    if isinstance(e, managed.ClientToolResult)
                )
                for _ in range(3):  # after the result: forwarding is back
                    await caller.speak(voice(12))
                await peer.wait_for(
                    lambda events: (
                        sum(
                            isinstance(e, managed.AudioInput) and e.audio == voice(12)
                            for e in events
                        )
                        >= 3
                    )
                )
                await caller.press("7")  # outside a capture: dropped (DTMF_TO_AGENT off)
                await caller.stop()
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
            metrics = await trio.to_thread.run_sync(get, caller.archer_url + "/metrics")

            def dump_tables() -> str:
                with system.store.engine.connect() as conn:
                    return "\n".join(
                        repr(row)
                        for table in metadata.sorted_tables
                        for row in conn.execute(sa.select(table))
                    )

            tables = await trio.to_thread.run_sync(dump_tables)
            spool = Path(system.settings.spool_path)
            spooled = await trio.to_thread.run_sync(
                lambda: spool.read_text() if spool.exists() else ""
            )
        finally:
            structlog.reset_defaults()
            logging.getLogger().handlers.clear()

    # Acceptance 1: between the tool call and its result, no key and no caller sound.
    [result] = peer.of(managed.ClientToolResult)
    assert (json.loads(result.result), result.is_error) == ({"verified": True}, False)
    during = peer.received[tool_call_at[0] : result_at]
    assert not [e for e in during if isinstance(e, managed.DtmfInput)]
    sounds = [e.audio for e in during if isinstance(e, managed.AudioInput)]
    assert sounds  # the agent's socket was kept fed ...
    assert not [s for s in sounds if non_silent(s)]  # ... with silence only
    assert not peer.of(managed.DtmfInput)  # not before, during or after
    assert stored.record.status == "completed"
    [record] = stored.record.tool_calls
    assert (record.name, record.result, dict(record.arguments)) == (
        "collect_pin",
        '{"verified":true}',
        {},
    )

    # Acceptance 2: the PIN is nowhere.
    places = {
        "agent": "\n".join(peer.raw),
        "tables": tables,
        "spool": spooled,
        "logs": rendered.getvalue(),
        "metrics": metrics,
    }
    assert '"call.finished"' in places["logs"]  # the call's log lines were captured
    assert "archer_calls_total" in metrics
    for place, text in places.items():
        assert pin not in text, place


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_keyed_pin_is_checked_and_found_nowhere(database_url: str) -> None:
    """Acceptances 1 and 2 for one PIN, keyed while the agent still asks for it."""
    await keypad_call(database_url, "58217364")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    pin=st.text(alphabet="0123456789", min_size=6, max_size=8).filter(lambda p: len(set(p)) >= 4)
)
async def test_hypothesis_varied_pins_are_found_nowhere(database_url: str, pin: str) -> None:
    """Acceptance 2 with PINs hypothesis picks (6-8 digits, at least four different ones, so
    no chance match with a timestamp or a counter)."""
    await keypad_call(database_url, pin)
