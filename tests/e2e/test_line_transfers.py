"""A Line agent's transfer in every shape agents send, over real sockets to Twilio's REST emulator.

The agent's messages are written here by hand (not by ``archer.cartesia.line``), in the shapes of
the Calls API reference (``transfer.target_phone_number``), of some agents (a flat
``target_phone_number``) and of the Line SDK's wire models (``cartesia-line`` 0.2.19:
``transfer_destination: {type: phone | sip_uri, value}``), so a test notices when Archer and the
peers disagree. Every one, and a target Archer cannot dial, ends in a ``<Dial>``: a caller who
asked for a person is never hung up on as a protocol error.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import partial

import pytest
import trio
import trio_websocket

from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from tests.e2e.peers import STEP_TIMEOUT
from tests.e2e.test_call import AUTH_TOKEN, running_system
from tests.e2e.test_line_faults import serve_line_agent, unused
from tests.helpers import audio

HUMAN = "+15555550199"
DESK = "+15555550142"
SIP_DESK = "sip:fraud-desk@pbx.bank.example"


async def run_transfer(
    database_url: str, transfer: dict[str, object]
) -> tuple[ET.Element, str, str | None]:
    """One Line call whose agent asks for ``transfer``: Twilio's ``<Dial>``, status, end reason."""
    rest = TwilioRestState(account_sid="AC" + "e2e2" * 8, auth_token=AUTH_TOKEN)

    async def agent(websocket: trio_websocket.WebSocketConnection) -> None:
        await websocket.send_message(
            json.dumps({"event": "ack", "stream_id": "sid_t", "config": {}})
        )
        await websocket.send_message(
            json.dumps({"event": "transfer_call", "stream_id": "sid_t", **transfer})
        )
        await trio.sleep(STEP_TIMEOUT)

    async with trio.open_nursery() as outer:
        rest_url = await outer.start(partial(serve_twilio_rest, rest))
        agent_url = await outer.start(serve_line_agent, agent)
        async with running_system(
            database_url,
            unused,
            tools=None,
            protocol="line",
            agent_server_url=agent_url,
            twilio_api_base_url=rest_url,
            human_agent_number=HUMAN,
            transfer_allowlist=frozenset({DESK, SIP_DESK}),
        ) as system:
            caller = system.caller
            rest.add_call(caller.call_sid)
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                await caller.speak(audio(1))
                # The transfer waits until what the agent said has played: Twilio echoes the mark.
                await caller.wait_for(lambda frames: bool(caller.marks()))
                await caller.echo_mark(caller.marks()[0])
                with trio.fail_after(STEP_TIMEOUT):
                    await rest.wait_for_updates(1)
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    [update] = rest.updates
    dial = ET.fromstring(update.fields["Twiml"]).find("Dial")
    assert dial is not None
    return dial, stored.record.status, stored.record.end_reason


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("transfer", "number"),
    [
        ({"transfer": {"target_phone_number": DESK}}, DESK),
        ({"target_phone_number": DESK}, DESK),
        ({"transfer_destination": {"type": "phone", "value": DESK}}, DESK),
        # Not on the allow-list: the bank's own desk, as for a managed agent's transfer tool.
        ({"transfer_destination": {"type": "phone", "value": "+15555550100"}}, HUMAN),
        # No usable target at all: the bank's own desk, with a warning, never protocol_error.
        ({"transfer_destination": {"type": "phone", "value": "my manager"}}, HUMAN),
        ({"transfer": {"target_phone_number": 5}}, HUMAN),
        ({}, HUMAN),
    ],
)
async def test_a_phone_transfer_in_any_shape_dials_a_number(
    database_url: str, transfer: dict[str, object], number: str
) -> None:
    """Each shape dials the number it names, or the bank's own desk when that cannot be used."""
    dial, status, end_reason = await run_transfer(database_url, transfer)
    assert (dial.text, list(dial)) == (number, [])
    assert (status, end_reason) == ("transferred", "transferred")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_sip_transfer_dials_sip(database_url: str) -> None:
    """``transfer_destination`` of type ``sip_uri`` becomes ``<Dial><Sip>``."""
    dial, status, end_reason = await run_transfer(
        database_url, {"transfer_destination": {"type": "sip_uri", "value": SIP_DESK}}
    )
    [sip] = list(dial)
    assert (sip.tag, sip.text) == ("Sip", SIP_DESK)
    assert (status, end_reason) == ("transferred", "transferred")
