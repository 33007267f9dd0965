"""``archer demo``: the whole system on one machine, no accounts, one scripted phone call.

Layer: cli (wiring). Starts the Twilio REST emulator, the Cartesia emulator and Archer itself in
one trio run on loopback ports, with a temporary SQLite database seeded with the demo bank; then
an emulated caller dials in and the two scripts play out in real time (about half a minute).

Rules: the demo proves something or fails. It checks the call record it prints against what the
scripts did (status, end reason, turns including the barge-in, every tool call, the card frozen
in the database, counters, Twilio's status callback) and reports each problem; the exit status
is 0 only when there are none.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import sqlalchemy as sa
import trio

from archer.audio.wav import Audio, write_wav
from archer.db import admin
from archer.db.store import SqlCallStore, StoredCall
from archer.db.tables import call_recordings, cards
from archer.emulators.cartesia.script import load_agent_script
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from archer.emulators.twilio.caller import EmulatedCaller
from archer.emulators.twilio.outcome import CallOutcome
from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from archer.emulators.twilio.script import load_caller_script
from archer.server import serve
from archer.settings import Settings

PUBLIC_BASE_URL: Final = "https://archer.demo.invalid"
HUMAN_AGENT_NUMBER: Final = "+15555550199"
CALLER_NUMBER: Final = "+15555550101"  # Maya Patel in the demo bank, PIN 1234
FROZEN_CARD: Final = "2207"
#: The record lands a moment after the caller's side is over; this bounds that moment.
RECORD_TIMEOUT: Final = 15.0


@attrs.frozen
class DemoResult:
    stored: StoredCall | None
    outcome: CallOutcome
    card_status: str | None
    problems: tuple[str, ...]


async def run_demo(
    *,
    transfer: bool,
    workdir: Path,
    progress: Callable[[str], None],
    protocol: str = "managed",
) -> DemoResult:
    """Run the scripted call end to end and check its record.

    Cancellation: every server is stopped; the temporary database stays in ``workdir``.
    """
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    await trio.to_thread.run_sync(admin.seed_database, database_url)
    progress("demo bank seeded (3 customers); starting the emulators and Archer")
    account_sid = "AC" + secrets.token_hex(16)
    auth_token = secrets.token_hex(16)
    api_key = "sk_car_demo_" + secrets.token_hex(12)
    variant = "_transfer" if transfer else ""
    # The same bank conversation on either protocol; a Line agent transfers by transfer_call.
    agent_script = f"bank_demo{variant}" + ("_line" if protocol == "line" and transfer else "")
    async with trio.open_nursery() as nursery:
        rest = TwilioRestState(account_sid=account_sid, auth_token=auth_token)
        rest_url = await nursery.start(serve_twilio_rest, rest)
        agent = CartesiaEmulator(
            api_key=api_key, script=load_agent_script(agent_script), progress=progress
        )
        agent_url = await nursery.start(serve_cartesia_emulator, agent)
        settings = Settings(
            database_url=database_url,
            webhook_base_url=PUBLIC_BASE_URL,
            twilio_account_sid=account_sid,
            twilio_auth_token=auth_token,
            twilio_api_base_url=rest_url,
            cartesia_api_key=api_key,
            cartesia_agent_id=agent.agent_id,
            cartesia_ws_url=agent_url,
            cartesia_protocol=protocol,
            human_agent_number=HUMAN_AGENT_NUMBER,
            transfer_allowlist=frozenset({HUMAN_AGENT_NUMBER}),
            # Recorded in two channels, paused while the PIN is keyed (issue 21).
            recording="dual",
        )
        urls = await nursery.start(
            partial(serve, settings, host="127.0.0.1", port=0, shutdown_trigger=trio.sleep_forever)
        )
        progress(f"Archer is listening on {urls[0]}; the caller dials in")
        caller = EmulatedCaller(
            archer_url=urls[0],
            public_base_url=PUBLIC_BASE_URL,
            account_sid=account_sid,
            auth_token=auth_token,
            from_number=CALLER_NUMBER,
            script=load_caller_script(f"caller_demo{variant}"),
            rest=rest,
            progress=progress,
        )
        outcome = await caller.run()
        store = SqlCallStore.open(database_url, pool_size=1)
        try:
            stored = await _wait_for_record(store, outcome.call_sid)
            card_status = await trio.to_thread.run_sync(_card_status, store.engine)
            recordings = await trio.to_thread.run_sync(_recordings, store.engine)
        finally:
            await store.aclose()
        nursery.cancel_scope.cancel(reason="the demo call is recorded")
    problems = check_record(
        stored,
        outcome,
        card_status,
        transfer=transfer,
        turns=protocol == "managed",
        agent_digits=sum(len(session.dtmf_digits) for session in agent.sessions),
    )
    emulated = rest.calls.get(outcome.call_sid)
    changes = emulated.recording.changes if emulated and emulated.recording else None
    if changes != [("paused", "skip"), ("in-progress", "")]:
        problems.append(f"the recording was not paused and resumed once for the PIN: {changes}")
    if recordings != [("completed", 2)]:
        problems.append(f"call_recordings holds {recordings}, want one completed two-channel")
    events = stored.record.recording_events if stored is not None else ()
    recording_sid = emulated.recording.sid if emulated and emulated.recording else None
    if [(e.action, e.accepted, e.recording_sid) for e in events] != [
        ("pause", True, recording_sid),
        ("resume", True, recording_sid),
    ]:
        problems.append(f"the record's recording pauses are {events}, want one pause and resume")
    return DemoResult(stored, outcome, card_status, tuple(problems))


async def _wait_for_record(store: SqlCallStore, call_sid: str) -> StoredCall | None:
    """The stored call once it is final and Twilio's status is on it (None after the timeout)."""
    stored = None
    with trio.move_on_after(RECORD_TIMEOUT):
        while True:
            stored = await store.load_call(call_sid)
            if stored is not None and stored.record.end_reason and stored.twilio_status:
                return stored
            await trio.sleep(0.1)
    return stored


def _recordings(engine: sa.Engine) -> list[tuple[str, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(call_recordings.c.status, call_recordings.c.channels))
        return [(str(row.status), row.channels) for row in rows]


def _card_status(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(cards.c.status).where(cards.c.last4 == FROZEN_CARD)
        ).scalar_one_or_none()
    return None if status is None else str(status)


def check_record(
    stored: StoredCall | None,
    outcome: CallOutcome,
    card_status: str | None,
    *,
    transfer: bool,
    turns: bool = True,
    agent_digits: int = 0,
) -> list[str]:
    """Everything about the call that is not what the demo's scripts make happen.

    ``turns``: whether the agent reports turns (Managed agents do; Line agents have no turn
    events, so their calls are checked by tools, audio and counters alone). ``agent_digits``:
    keypad digits the agent received (the PIN is taken by keypad capture, so none).
    """
    if stored is None:
        return ["no call record was stored"]
    record = stored.record
    problems = []
    expected = ("transferred", "transferred") if transfer else ("completed", "agent_ended")
    if (record.status, record.end_reason) != expected:
        problems.append(f"status/end_reason {record.status}/{record.end_reason}, want {expected}")
    if record.error:
        problems.append(f"the call recorded an error: {record.error}")
    if not (record.frames_in and record.frames_out):
        problems.append(f"frames in/out {record.frames_in}/{record.frames_out}")
    if record.frames_dropped:
        problems.append(f"{record.frames_dropped} frames dropped")
    if record.duration_ms is None or record.ended_at is None or record.agent_call_id is None:
        problems.append("duration, end time or agent call id missing")
    roles = [turn.role for turn in record.turns]
    if turns and (roles.count("user") < 2 or roles.count("assistant") < 3):
        problems.append(f"turns by role {roles}")
    if turns and not any(turn.role == "assistant" and turn.interrupted for turn in record.turns):
        problems.append("no agent turn was recorded as interrupted by the barge-in")
    if outcome.clears_received < 1:
        problems.append("the caller's barge-in never cleared Twilio's buffer")
    wanted_tools = ["collect_pin", "get_account_balance"]
    wanted_tools += ["transfer_to_human"] if transfer else ["freeze_card", "end_call"]
    tools = {tool.name: tool for tool in record.tool_calls}
    for name in wanted_tools:
        tool = tools.get(name)
        if tool is None or tool.is_error or tool.finished_at is None:
            problems.append(f"tool {name}: {'missing' if tool is None else tool.result}")
    verify = tools.get("collect_pin")
    if verify is not None and dict(verify.arguments):
        problems.append(f"collect_pin was recorded with arguments {dict(verify.arguments)}")
    if verify is not None and json.loads(verify.result or "{}") != {"verified": True}:
        problems.append("the caller was not verified by keypad")
    if agent_digits:
        problems.append(f"the agent received {agent_digits} keypad digits (it must get none)")
    if not transfer and card_status != "frozen":
        problems.append(f"card {FROZEN_CARD} is {card_status}, want frozen")
    if stored.twilio_status != "completed":
        problems.append(f"Twilio's status callback did not land ({stored.twilio_status})")
    if outcome.invalid:
        problems.append(f"Archer sent Twilio invalid messages: {outcome.invalid}")
    if transfer and outcome.transferred_to != HUMAN_AGENT_NUMBER:
        problems.append(f"transferred to {outcome.transferred_to}, want {HUMAN_AGENT_NUMBER}")
    return problems


def format_record(result: DemoResult) -> str:
    """The call record as a person reads it."""
    if result.stored is None:
        return "(no call record)"
    record, lines = result.stored.record, []
    lines.append(
        f"call {record.call_sid}  stream {record.stream_sid}  agent {record.agent_call_id}"
    )
    lines.append(
        f"status {record.status}  end reason {record.end_reason}  "
        f"duration {(record.duration_ms or 0) / 1000:.1f} s  Twilio {result.stored.twilio_status}"
        f" ({result.stored.twilio_duration_s} s)"
    )
    lines.append(
        f"frames in {record.frames_in}  out {record.frames_out}  dropped {record.frames_dropped}"
    )
    lines.append("turns:")
    for turn in record.turns:
        cut = "  [interrupted]" if turn.interrupted else ""
        heard = f"  (heard {turn.heard_ms / 1000:.1f} s)" if turn.heard_ms is not None else ""
        who = "agent " if turn.role == "assistant" else "caller"
        lines.append(f"  {turn.turn:>2} {who} {turn.text}{cut}{heard}")
    lines.append("tool calls:")
    for tool in record.tool_calls:
        took = (
            f"{(tool.finished_at - tool.started_at).total_seconds() * 1000:.0f} ms"
            if tool.finished_at
            else "unfinished"
        )
        outcome = ("error" if tool.is_error else "ok") + (
            f", {tool.outcome}" if tool.outcome else ""
        )
        arguments = json.dumps(dict(tool.arguments))
        lines.append(f"  {tool.name}({arguments}) → {tool.result}  ({outcome}, {took})")
    if record.recording_events:
        lines.append("recording:")
    for event in record.recording_events:
        since = (event.requested_at - (record.connected_at or record.started_at)).total_seconds()
        answer = "accepted" if event.accepted else f"refused ({event.error_code})"
        lines.append(f"  {event.action} at +{since:.2f} s → {answer}")
    lines.append(f"card {FROZEN_CARD}: {result.card_status}")
    return "\n".join(lines)


def main_demo(*, transfer: bool, out: Path, protocol: str = "managed") -> int:
    """Run the demo, print progress and the record, write the caller's audio; 0 if correct."""

    def progress(line: str) -> None:
        print(f"  · {line}", flush=True)

    flags = (" --transfer" if transfer else "") + (
        f" --protocol {protocol}" if protocol != "managed" else ""
    )
    print(f"archer demo{flags}: one emulated call, in real time")
    with tempfile.TemporaryDirectory(prefix="archer-demo-") as workdir:
        result = trio.run(
            partial(
                run_demo,
                transfer=transfer,
                workdir=Path(workdir),
                progress=progress,
                protocol=protocol,
            )
        )
    write_wav(out, Audio(8000, "mulaw", result.outcome.heard))
    print()
    print(format_record(result))
    print()
    print(f"what the caller heard: {out} ({len(result.outcome.heard) / 8000:.1f} s, 8 kHz μ-law)")
    if result.problems:
        print("the call record is NOT what the scripts should have produced:")
        for problem in result.problems:
            print(f"  ✗ {problem}")
        return 1
    print("the call record is complete and correct ✓")
    return 0
