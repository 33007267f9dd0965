"""The banking tools in real calls: loopback sockets, the real database, Twilio's REST emulated.

The agent drives the tools over the Managed Agents protocol; the transfer goes through the real
twilio library to ``archer.emulators.twilio.rest`` on loopback.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import attrs
import sqlalchemy as sa
import trio

from archer.cartesia import managed
from archer.db.seed import seed_demo_bank
from archer.db.store import StoredCall
from archer.db.tables import cards
from archer.emulators.twilio.rest import CallUpdate, TwilioRestState, serve_twilio_rest
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.test_call import AUTH_TOKEN, System, running_system
from tests.helpers import audio

SEED = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
MAYA = json.loads(SEED.read_text())["customers"][0]
HUMAN = "+15555550199"


async def seed(system: System) -> None:
    await trio.to_thread.run_sync(seed_demo_bank, system.store.engine, SEED)


def results(peer: AgentPeer) -> dict[str, managed.ClientToolResult]:
    return {result.tool_call_id: result for result in peer.of(managed.ClientToolResult)}


async def call_tool(
    peer: AgentPeer, tool_call_id: str, name: str, parameters: dict[str, object]
) -> managed.ClientToolResult:
    await peer.send(managed.client_tool_call(tool_call_id, name, parameters, expects_response=True))
    await peer.wait_for(lambda events: tool_call_id in results(peer))
    return results(peer)[tool_call_id]


async def test_verify_then_balance_then_freeze(database_url: str) -> None:
    """PIN, balance (matching the database) and a card freeze, all recorded with the PIN masked."""
    answers: dict[str, managed.ClientToolResult] = {}

    async def banking(peer: AgentPeer) -> None:
        await peer.accept_session()
        answers["verify"] = await call_tool(peer, "t1", "verify_caller", {"pin": MAYA["pin"]})
        answers["balance"] = await call_tool(
            peer, "t2", "get_account_balance", {"account_type": "checking"}
        )
        answers["freeze"] = await call_tool(peer, "t3", "freeze_card", {"last4": "2207"})

    async with running_system(database_url, banking, tools=None, pin_entry="both") as system:
        await seed(system)
        caller = system.caller
        caller.from_number = MAYA["phone_e164"]
        await caller.dial()
        async with trio.open_nursery() as nursery:
            await caller.connect(nursery)
            peer = await system.peer()
            await peer.wait_for(lambda events: "t3" in results(peer))
            await caller.stop()
            stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        with system.store.engine.connect() as conn:
            card_status = conn.execute(
                sa.select(cards.c.status).where(cards.c.last4 == "2207")
            ).scalar_one()

    assert json.loads(answers["verify"].result) == {"verified": True}
    checking = next(a for a in MAYA["accounts"] if a["kind"] == "checking")
    assert json.loads(answers["balance"].result) == {
        "accounts": [
            {
                "account_type": "checking",
                "last4": checking["last4"],
                "balance_cents": checking["balance_cents"],
                "currency": checking["currency"],
            }
        ]
    }
    assert json.loads(answers["freeze"].result) == {
        "last4": "2207",
        "status": "frozen",
        "changed": True,
    }
    assert card_status == "frozen"
    assert not any(result.is_error for result in answers.values())
    recorded = {tool.tool_call_id: tool for tool in stored.record.tool_calls}
    assert [recorded[t].name for t in ("t1", "t2", "t3")] == [
        "verify_caller",
        "get_account_balance",
        "freeze_card",
    ]
    assert recorded["t1"].arguments == {"pin": "***"}
    assert MAYA["pin"] not in json.dumps([dict(tool.arguments) for tool in recorded.values()])
    assert all(tool.finished_at is not None and not tool.is_error for tool in recorded.values())


@attrs.frozen
class TransferOutcome:
    call_sid: str
    updates_before_echo: list[CallUpdate]
    updates: list[CallUpdate]
    tool_result: managed.ClientToolResult | None
    stored: StoredCall


async def transfer_scenario(database_url: str, *, interrupt: bool) -> TransferOutcome:
    """The agent says a lead-in and asks for a transfer; the caller echoes the lead-in's mark."""
    rest = TwilioRestState(account_sid="AC" + "e2e2" * 8, auth_token=AUTH_TOKEN)

    async def transfer(peer: AgentPeer) -> None:
        await peer.accept_session()
        for tag in range(5):
            await peer.send(managed.audio_output(audio(tag)))
        await peer.send(
            managed.client_tool_call(
                "tx", "transfer_to_human", {"reason": "fraud"}, expects_response=True
            )
        )
        if interrupt:
            await peer.send(managed.audio_output_clear())

    async with trio.open_nursery() as outer:
        rest_url = await outer.start(partial(serve_twilio_rest, rest))
        async with running_system(
            database_url,
            transfer,
            tools=None,
            twilio_api_base_url=rest_url,
            human_agent_number=HUMAN,
        ) as system:
            caller = system.caller
            rest.add_call(caller.call_sid)
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                peer = await system.peer()
                if interrupt:
                    await caller.wait_for(lambda frames: any(f["event"] == "clear" for f in frames))
                    await trio.sleep(1)  # long enough for a wrong transfer to show up
                    before = list(rest.updates)
                    # Twilio echoes any mark still pending once it has cleared its buffer.
                    for mark in caller.marks():
                        await caller.echo_mark(mark)
                    await peer.wait_for(lambda events: "tx" in results(peer))
                    await caller.stop()  # the caller hangs up later, still talking to the agent
                else:
                    await caller.wait_for(lambda frames: bool(caller.marks()))
                    await trio.sleep(1)  # the lead-in is "playing": no transfer may happen yet
                    before = list(rest.updates)
                    await caller.echo_mark(caller.marks()[0])
                    with trio.fail_after(STEP_TIMEOUT):
                        await rest.wait_for_updates(1)
                        await caller.closed.wait()  # the call moved: Archer closed the stream
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    return TransferOutcome(
        call_sid=caller.call_sid,
        updates_before_echo=before,
        updates=list(rest.updates),
        tool_result=results(peer).get("tx"),
        stored=stored,
    )


async def test_transfer_dials_the_human_only_after_the_lead_in_was_heard(database_url: str) -> None:
    """<Dial> is requested after the mark's echo, never before; the call ends transferred."""
    outcome = await transfer_scenario(database_url, interrupt=False)
    assert outcome.updates_before_echo == []
    [update] = outcome.updates
    assert update.call_sid == outcome.call_sid
    dial = ET.fromstring(update.fields["Twiml"]).find("Dial")
    assert dial is not None
    assert dial.text == HUMAN
    record = outcome.stored.record
    assert (record.status, record.end_reason) == ("transferred", "transferred")


async def test_an_interrupted_lead_in_means_no_transfer(database_url: str) -> None:
    """With a clear before the mark's echo, Twilio is never asked to transfer."""
    outcome = await transfer_scenario(database_url, interrupt=True)
    assert outcome.updates == []
    assert outcome.tool_result is not None
    assert outcome.tool_result.is_error
    assert "interrupted" in outcome.tool_result.result
    record = outcome.stored.record
    assert (record.status, record.end_reason) == ("completed", "caller_hangup")
