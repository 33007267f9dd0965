"""``archer demo --outbound``: the bank rings a customer about a suspicious payment, end to end.

Layer: cli (wiring). Starts the Twilio Calls API emulator (with a scripted callee), the
Cartesia emulator (the ``fraud_alert`` agent script) and Archer itself in one trio run on
loopback ports, with a temporary SQLite database seeded with the demo bank; then queues a fraud
alert about one of the demo customer's card payments, as ``POST /calls`` does. The callee
answers as a person, keys the PIN while the agent asks for it, says the payment was not theirs;
the agent records the dispute and hangs up (about half a minute, in real time).

Rules: the demo proves something or fails. It checks what it prints: the request ``completed``
with ``answered_by`` human and one attempt (what ``GET /calls/{id}`` answers), the call record
(keypad verification, ``review_transaction`` with the dispute), the paying card frozen and
nothing else, the dispute row, no keypad digit at the agent, and the facts the agent was
given; the exit status is 0 only when there are none wrong.
"""

from __future__ import annotations

import json
import secrets
import socket
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import sqlalchemy as sa
import trio

from archer.call.outbound import CallRequest, RequestView
from archer.db import admin
from archer.db.outbound import SqlOutbound
from archer.db.store import SqlCallStore, StoredCall
from archer.db.tables import cards, transaction_reviews, transactions
from archer.emulators.cartesia.script import load_agent_script
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from archer.emulators.twilio.dialer import DialerState, serve_twilio_dialer
from archer.emulators.twilio.rest import TwilioRestState
from archer.emulators.twilio.script import load_caller_script
from archer.server import serve
from archer.settings import Settings

__all__ = ["OutboundDemoResult", "main_outbound_demo", "run_outbound_demo"]

CUSTOMER_NUMBER: Final = "+15555550101"  # Maya Patel in the demo bank, PIN 1234
FROM_NUMBER: Final = "+15005550006"
#: The suspicious payment: Maya's coffee, paid with her debit card 2207 (checking 4821).
MERCHANT: Final = "Blue Bottle Coffee"
PAYING_CARD: Final = "2207"
#: What the agent must never be told.
NEVER_SAID: Final = ("4821", "Maya", "Patel", "254310", "1234")
#: The request finishes a moment after the call; this bounds that moment.
FINISH_TIMEOUT: Final = 90.0


@attrs.frozen
class OutboundDemoResult:
    view: RequestView | None
    stored: StoredCall | None
    #: Each card's last four digits and status after the call.
    card_statuses: dict[str, str]
    #: The dispute row: (transaction id, call SID, recognised, cards frozen, freeze scope).
    reviews: list[tuple[int, str, bool, str, str]]
    #: What the agent's session started with (dynamic variables or Line metadata).
    session_start: dict[str, object]
    agent_digits: int
    transaction_id: int
    problems: tuple[str, ...]


async def run_outbound_demo(
    *, workdir: Path, progress: Callable[[str], None], protocol: str = "managed"
) -> OutboundDemoResult:
    """Queue the fraud alert, let the scripted callee answer, and check what was recorded.

    Cancellation: every server is stopped; the temporary database stays in ``workdir``.
    """
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    await trio.to_thread.run_sync(admin.seed_database, database_url)
    queue = SqlOutbound.open(database_url, pool_size=1)
    try:
        transaction_id = await trio.to_thread.run_sync(_payment, queue.engine)
        progress("demo bank seeded (3 customers); starting the emulators and Archer")
        account_sid = "AC" + secrets.token_hex(16)
        auth_token = secrets.token_hex(16)
        api_key = "sk_car_demo_" + secrets.token_hex(12)
        dialer = DialerState(
            TwilioRestState(account_sid, auth_token),
            callees=["human"],
            callee_script=load_caller_script("callee_fraud_alert"),
            progress=progress,
        )
        agent = CartesiaEmulator(
            api_key=api_key, script=load_agent_script("fraud_alert"), progress=progress
        )
        async with trio.open_nursery() as nursery:
            rest_url = await nursery.start(partial(serve_twilio_dialer, dialer))
            agent_url = await nursery.start(serve_cartesia_emulator, agent)
            # The emulated Twilio posts to the URLs Archer gives it, so Archer's public base URL
            # is its own loopback address.
            port = _free_port()
            settings = Settings(
                database_url=database_url,
                webhook_base_url=f"http://127.0.0.1:{port}",
                twilio_account_sid=account_sid,
                twilio_auth_token=auth_token,
                twilio_api_base_url=rest_url,
                cartesia_api_key=api_key,
                cartesia_agent_id=agent.agent_id,
                cartesia_ws_url=agent_url,
                cartesia_protocol=protocol,
                outbound_from_number=FROM_NUMBER,
            )
            urls = await nursery.start(
                partial(
                    serve,
                    settings,
                    host="127.0.0.1",
                    port=port,
                    shutdown_trigger=trio.sleep_forever,
                )
            )
            listening = urls[0]
            progress(f"Archer is listening on {listening}; the bank queues a fraud alert")
            request = CallRequest(
                to=CUSTOMER_NUMBER, purpose="fraud_alert", transaction_id=transaction_id
            )
            queued = await queue.enqueue(request, api_key_id=None, idempotency_key=None)
            progress(f"queued outbound request {queued.id} about payment {transaction_id}")
            view = await _wait_finished(queue, queued.id)
            store = SqlCallStore.open(database_url, pool_size=1)
            try:
                stored = None
                if view is not None and dialer.created:
                    stored = await _wait_for_record(store, dialer.created[0].sid)
                statuses, reviews = await trio.to_thread.run_sync(_outcome, store.engine)
            finally:
                await store.aclose()
            nursery.cancel_scope.cancel(reason="the demo call is recorded")
    finally:
        queue.close()
    sessions = agent.sessions
    session_start: dict[str, object] = {}
    if sessions:
        first = sessions[0]
        session_start = dict(first.dynamic_variables if protocol == "managed" else first.metadata)
    agent_digits = sum(len(session.dtmf_digits) for session in sessions)
    problems = check_outbound(
        view, stored, statuses, reviews, session_start, agent_digits, transaction_id
    )
    return OutboundDemoResult(
        view, stored, statuses, reviews, session_start, agent_digits, transaction_id, problems
    )


def _free_port() -> int:
    """A free loopback port (Archer's public base URL must name it before it binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _payment(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(transactions.c.id).where(transactions.c.description == MERCHANT)
            ).scalar_one()
        )


async def _wait_finished(queue: SqlOutbound, request_id: int) -> RequestView | None:
    """The request once it is completed or failed (its last state after the timeout)."""
    view = None
    with trio.move_on_after(FINISH_TIMEOUT):
        while True:
            view = await queue.view(request_id)
            if view is not None and view.status in ("completed", "failed"):
                return view
            await trio.sleep(0.2)
    return view


async def _wait_for_record(store: SqlCallStore, call_sid: str) -> StoredCall | None:
    """The call record once its final flush landed (Twilio's status callback may come first)."""
    stored = None
    with trio.move_on_after(FINISH_TIMEOUT):
        while True:
            stored = await store.load_call(call_sid)
            if stored is not None and stored.record.end_reason is not None:
                return stored
            await trio.sleep(0.1)
    return stored


def _outcome(
    engine: sa.Engine,
) -> tuple[dict[str, str], list[tuple[int, str, bool, str, str]]]:
    with engine.connect() as conn:
        statuses = {
            str(row.last4): str(row.status)
            for row in conn.execute(sa.select(cards.c.last4, cards.c.status))
        }
        reviews = [
            (
                int(row.transaction_id),
                str(row.call_sid),
                bool(row.recognised),
                str(row.cards_frozen),
                str(row.freeze_scope),
            )
            for row in conn.execute(sa.select(transaction_reviews))
        ]
    return statuses, reviews


def check_outbound(
    view: RequestView | None,
    stored: StoredCall | None,
    statuses: dict[str, str],
    reviews: list[tuple[int, str, bool, str, str]],
    session_start: dict[str, object],
    agent_digits: int,
    transaction_id: int,
) -> tuple[str, ...]:
    """Everything about the alert that is not what the scripts make happen."""
    if view is None:
        return ("the outbound request was not found",)
    problems = []
    if (view.status, view.answered_by, view.end_reason) != ("completed", "human", "completed"):
        problems.append(
            f"request {view.status}/{view.answered_by}/{view.end_reason},"
            " want completed/human/completed"
        )
    if [a.outcome for a in view.attempts] != ["completed"]:
        problems.append(f"attempts {[a.outcome for a in view.attempts]}, want one completed")
    if stored is None:
        return (*problems, "no call record was stored")
    if view.call_id is None:
        problems.append("the request does not name its call record")
    record = stored.record
    if (record.status, record.end_reason) != ("completed", "agent_ended"):
        problems.append(f"call {record.status}/{record.end_reason}, want completed/agent_ended")
    tools = {tool.name: tool for tool in record.tool_calls}
    verify = tools.get("collect_pin")
    if verify is None or json.loads(verify.result or "{}") != {"verified": True}:
        problems.append("the callee was not verified by keypad")
    review = tools.get("review_transaction")
    if review is None or review.is_error:
        problems.append(f"review_transaction: {'missing' if review is None else review.result}")
    if agent_digits:
        problems.append(f"the agent received {agent_digits} keypad digits (it must get none)")
    frozen = sorted(last4 for last4, status in statuses.items() if status == "frozen")
    if frozen != sorted([PAYING_CARD, "3389"]):  # 3389 is frozen in the demo bank already
        problems.append(f"frozen cards {frozen}, want only {PAYING_CARD} (and James's 3389)")
    if [(r[0], r[2], r[3], r[4]) for r in reviews] != [
        (transaction_id, False, PAYING_CARD, "card")
    ] or reviews[0][1] != record.call_sid:
        problems.append(f"dispute rows {reviews}, want one for the payment and this call")
    facts = {
        "call_purpose": "fraud_alert",
        "merchant": MERCHANT,
        "amount": "5.75",
        "currency": "USD",
        "card_last4": PAYING_CARD,
    }
    for name, value in facts.items():
        if session_start.get(name) != value:
            problems.append(f"the agent started with {name}={session_start.get(name)!r}")
    told = json.dumps(session_start)
    problems.extend(f"the agent was told {secret!r}" for secret in NEVER_SAID if secret in told)
    return tuple(problems)


def format_outbound(result: OutboundDemoResult) -> str:
    """What happened, as a person reads it."""
    lines = []
    if result.view is not None:
        view = result.view
        lines.append(
            f"request {view.id} ({view.purpose}): {view.status}, answered by {view.answered_by},"
            f" end reason {view.end_reason}, call record {view.call_id}"
        )
        lines.extend(f"  attempt {a.attempt}: {a.call_sid} {a.outcome}" for a in view.attempts)
    lines.append("the agent's session started with:")
    lines.extend(f"  {name} = {value!r}" for name, value in result.session_start.items())
    if result.stored is not None:
        record = result.stored.record
        lines.append(f"call {record.call_sid}: {record.status}, end reason {record.end_reason}")
        for turn in record.turns:
            who = "agent " if turn.role == "assistant" else "callee"
            lines.append(f"  {turn.turn:>2} {who} {turn.text}")
        lines.append("tool calls:")
        for tool in record.tool_calls:
            arguments = json.dumps(dict(tool.arguments))
            lines.append(f"  {tool.name}({arguments}) → {tool.result}")
    lines.append(f"card {PAYING_CARD}: {result.card_statuses.get(PAYING_CARD)}")
    lines.extend(
        f"dispute: transaction {r[0]}, call {r[1]}, recognised {r[2]}, cards frozen {r[3]} ({r[4]})"
        for r in result.reviews
    )
    lines.append(f"keypad digits the agent received: {result.agent_digits}")
    return "\n".join(lines)


def main_outbound_demo(*, protocol: str = "managed") -> int:
    """Run the fraud alert, print progress and the outcome; 0 if it is what it should be."""

    def progress(line: str) -> None:
        print(f"  · {line}", flush=True)

    flags = f" --protocol {protocol}" if protocol != "managed" else ""
    print(f"archer demo --outbound{flags}: the bank rings a customer about a payment")
    with tempfile.TemporaryDirectory(prefix="archer-demo-") as workdir:
        result = trio.run(
            partial(run_outbound_demo, workdir=Path(workdir), progress=progress, protocol=protocol)
        )
    print()
    print(format_outbound(result))
    print()
    if result.problems:
        print("the fraud alert did NOT go as the scripts should have made it:")
        for problem in result.problems:
            print(f"  ✗ {problem}")
        return 1
    print("the card is frozen, the dispute recorded, the request completed ✓")
    return 0
