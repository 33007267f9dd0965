"""Issue 16, acceptance 1 and 2: the agent fails mid-call and Archer rides over it, or hands the
caller to a person.

Tier: end to end over loopback: real hypercorn, real websockets, a real database, the Cartesia
emulator (``fail_mid_turn`` closes 1011 halfway through a turn; ``accept_sessions`` refuses the
connections after it with HTTP 503) and the Twilio REST emulator.
"""

from __future__ import annotations

import base64
from functools import partial

import pytest
import trio

from archer.audio.clips import speech_clip
from archer.audio.hold import hold_frames
from archer.emulators.cartesia.script import parse_agent_script
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from tests.e2e.peers import STEP_TIMEOUT, AgentServer, TwilioCaller
from tests.e2e.test_call import AUTH_TOKEN, running_system

HUMAN = "+15555550199"
SCRIPT = parse_agent_script(
    {"description": "greet, then wait", "steps": [{"say": "agent_greeting"}, {"pause": 60}]},
    name="reconnect",
)
#: The reconnect budget in these tests: short, so the give-up cases end quickly.
ATTEMPTS, WINDOW = 3, 4.0


def _frames(ulaw: bytes) -> list[str]:
    return [base64.b64encode(ulaw[at : at + 160]).decode() for at in range(0, len(ulaw), 160)]


def _emulator(**faults: int) -> CartesiaEmulator:
    return CartesiaEmulator(
        api_key=AgentServer(_unused).api_key, script=SCRIPT, agent_id="agent_e2e", **faults
    )


async def _unused(peer: object) -> None:
    raise AssertionError("the Cartesia emulator plays the agent here")


async def _echo_marks(caller: TwilioCaller) -> None:
    """Twilio's side of playback: every mark is echoed once its audio has played."""
    echoed: set[str] = set()
    while True:
        await trio.sleep(0.05)
        for name in caller.marks():
            if name not in echoed:
                echoed.add(name)
                await caller.echo_mark(name)


async def test_a_1011_mid_turn_is_bridged_by_a_new_session(sqlite_url: str) -> None:
    """Acceptance 1: hold tone within 0.5 s, the new session's greeting, one reconnect, both
    session ids, and nothing of the dead session's turn after the reconnect."""
    emulator = _emulator(fail_mid_turn=1)
    greeting = _frames(emulator.rendered("agent_greeting", "mulaw_8000"))
    hold = set(hold_frames())
    async with trio.open_nursery() as outer:
        agent_url = await outer.start(serve_cartesia_emulator, emulator)
        async with running_system(
            sqlite_url,
            _unused,
            agent_server_url=agent_url,
            reconnect_attempts=ATTEMPTS,
            reconnect_window=WINDOW,
        ) as system:
            caller = system.caller
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                with trio.fail_after(STEP_TIMEOUT):
                    await caller.wait_for(lambda _: bool(emulator.sessions))
                    await emulator.sessions[0].ended.wait()
                failed_at = trio.current_time()
                await caller.wait_for(lambda _: bool(hold & set(caller.media())))
                hold_after = trio.current_time() - failed_at
                # The new session greets from the start; the caller hears all of it.
                await caller.wait_for(lambda _: caller.media()[-len(greeting) :] == greeting)
                await caller.stop()
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    assert hold_after < 0.5, f"hold tone after {hold_after:.3f} s"
    media = caller.media()
    first_hold = next(i for i, payload in enumerate(media) if payload in hold)
    # Before the failure: the first half of the greeting, from its start.
    assert media[:first_hold] == greeting[:first_hold]
    assert 0 < first_hold < len(greeting)
    # After it: hold frames, then the new greeting whole and in order, nothing else: a frame
    # of the dead session's turn would sit in between (it is the same clip, from its middle).
    after = [payload for payload in media[first_hold:] if payload not in hold]
    assert after == greeting
    record = stored.record
    assert (record.status, record.end_reason) == ("completed", "caller_hangup")
    assert record.agent_reconnects == 1
    assert record.agent_call_ids == tuple(session.call_id for session in emulator.sessions)
    assert len(record.agent_call_ids) == 2
    assert record.agent_call_id == emulator.sessions[1].call_id
    assert caller.invalid == []


async def _give_up(
    database_url: str, *, accept_sessions: int, human: str
) -> tuple[str, str | None, list[str], TwilioRestState, CartesiaEmulator]:
    rest = TwilioRestState(account_sid="AC" + "e2e2" * 8, auth_token=AUTH_TOKEN)
    emulator = _emulator(accept_sessions=accept_sessions, fail_mid_turn=1)
    async with trio.open_nursery() as outer:
        rest_url = await outer.start(partial(serve_twilio_rest, rest))
        agent_url = await outer.start(serve_cartesia_emulator, emulator)
        async with running_system(
            database_url,
            _unused,
            tools=None,
            agent_server_url=agent_url,
            twilio_api_base_url=rest_url,
            human_agent_number=human,
            reconnect_attempts=ATTEMPTS,
            reconnect_window=WINDOW,
        ) as system:
            caller = system.caller
            rest.add_call(caller.call_sid)
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                nursery.start_soon(_echo_marks, caller)
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    assert caller.invalid == []
    return stored.record.status, stored.record.end_reason, caller.media(), rest, emulator


@pytest.mark.parametrize("accept_sessions", [1, 0], ids=["mid-call", "first-connect"])
async def test_no_agent_comes_back_the_caller_goes_to_a_person(
    database_url: str, accept_sessions: int
) -> None:
    """Acceptance 2: the apology, then a transfer to HUMAN_AGENT_NUMBER through Twilio's REST
    API (the transfer_to_human tool's path): agent_lost_transferred."""
    status, end_reason, media, rest, emulator = await _give_up(
        database_url, accept_sessions=accept_sessions, human=HUMAN
    )
    assert (status, end_reason) == ("transferred", "agent_lost_transferred")
    [update] = rest.updates
    assert HUMAN in update.fields["Twiml"]
    apology = _frames(speech_clip("agent_lost_transfer"))
    assert _contains(media, apology[:-1])  # the last frame is padded on the wire
    assert len(emulator.sessions) == accept_sessions


@pytest.mark.parametrize("accept_sessions", [1, 0], ids=["mid-call", "first-connect"])
async def test_no_agent_and_no_number_the_caller_hears_the_apology_then_a_hang_up(
    sqlite_url: str, accept_sessions: int
) -> None:
    status, end_reason, media, rest, _ = await _give_up(
        sqlite_url, accept_sessions=accept_sessions, human=""
    )
    assert (status, end_reason) == ("failed", "agent_lost")
    assert rest.updates == []
    apology = _frames(speech_clip("agent_lost_goodbye"))
    assert _contains(media, apology[:-1])


def _contains(media: list[str], part: list[str]) -> bool:
    return any(media[at : at + len(part)] == part for at in range(len(media) - len(part) + 1))
