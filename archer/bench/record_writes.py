"""``archer bench --record-writes N``: the database writes one call costs, and what they take.

Layer: bench. Plays N scripted calls, one after the other, through the real write path of a call
(``SqlCallStore`` and the ``CallRecorder`` that writes the record as the call goes) against
``--database-url`` (default: a fresh SQLite file), and times every unit of work from the trio
side (thread hand-off included).

The script is a typical bank call: the webhook opens the row, the stream claims it, 12 turns
(6 exchanges) each written when it ends, three tools (verify_caller, get_account_balance, and
freeze_card, which has a side effect: written before it acts and after), each finished tool
written in its own batch (an upper bound: in a live call a tool result often rides with the next
turn's write), the final flush, and Twilio's status callback. Rows the bench wrote are deleted
afterwards, so it can run against a real database.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
import trio

from archer.call.events import TurnEnded, TurnStarted
from archer.call.recorder import CallRecorder
from archer.call.records import CallRecord, NewCall, StreamClaim, TwilioStatusUpdate
from archer.call.state import CallState
from archer.db.engine import init_schema
from archer.db.store import SqlCallStore
from archer.db.tables import calls

TURNS: Final = 12
#: (name, has a side effect)
TOOLS: Final = (("verify_caller", False), ("get_account_balance", False), ("freeze_card", True))


class _TimedStore:
    """The store, timing each unit of work by operation (and counting the writes)."""

    def __init__(self, store: SqlCallStore) -> None:
        self.store = store
        self.seconds: dict[str, list[float]] = defaultdict(list)

    async def _timed(self, operation: str, work: Any) -> Any:
        started = time.perf_counter()
        result = await work
        self.seconds[operation].append(time.perf_counter() - started)
        return result

    async def save_call(self, record: CallRecord) -> None:
        kind = "final_flush" if record.status not in ("initiated", "in_progress") else "as_it_goes"
        await self._timed(kind, self.store.save_call(record))


async def _one_call(store: SqlCallStore, timed: _TimedStore, call_sid: str) -> int:
    """Play one call; the number of writes it made."""
    now = datetime.now(UTC)
    await timed._timed(
        "open_call",
        store.open_call(
            NewCall(
                call_sid=call_sid,
                from_number="+15555550142",
                to_number="+15555550100",
                caller_e164="+15555550142",
                stream_token_hash="b" * 64,
                stream_token_expires_at=now + timedelta(seconds=60),
                started_at=now,
            )
        ),
    )
    claimed = await timed._timed(
        "claim_stream",
        store.claim_stream(StreamClaim(call_sid, "MZ" + call_sid[2:], "b" * 64, now)),
    )
    assert claimed is not None
    call = CallState.for_claimed(
        claimed, stream_sid="MZ" + call_sid[2:], connected_at=now, clock=trio.current_time()
    )
    recorder = CallRecorder(call, timed)  # type: ignore[arg-type]  # a timed CallStore
    tools = iter(TOOLS)
    for turn in range(1, TURNS + 1):
        role = "user" if turn % 2 == 0 else "assistant"
        text = f"Words of turn {turn}, about as long as a spoken sentence is."
        call.turn_started(TurnStarted(turn, role, float(turn)))  # type: ignore[arg-type]
        call.turn_ended(TurnEnded(turn, role, text, False, float(turn), turn + 0.5))  # type: ignore[arg-type]
        await recorder.write_now()  # the writer wakes at each turn's end
        if role == "user" and (tool := next(tools, None)) is not None:
            name, side_effect = tool
            call.tool_started(f"t{turn}", name, {"last4": "2207"}, now=datetime.now(UTC))
            if side_effect:
                await recorder.write_now()  # before it acts
            call.tool_finished(f"t{turn}", '{"ok":true}', is_error=False, now=datetime.now(UTC))
            await recorder.write_now()  # after (or the batch that carries the result)
    call.finish("completed", "caller_hangup")
    call.close(now=datetime.now(UTC), clock=trio.current_time())
    await timed.save_call(call.snapshot())
    await timed._timed(
        "record_twilio_status",
        store.record_twilio_status(TwilioStatusUpdate(call_sid, "completed", 60)),
    )
    return 2 + call.db_writes + 2  # webhook, claim, as it goes, final flush, status


async def measure(database_url: str | None, calls_to_play: int) -> dict[str, Any]:
    """Play ``calls_to_play`` calls; writes per call and milliseconds per write by operation."""
    with tempfile.TemporaryDirectory(prefix="archer-bench-writes-") as workdir:
        url = database_url or f"sqlite:///{Path(workdir) / 'writes.db'}"
        store = SqlCallStore.open(url, pool_size=2)
        prefix = "CAbench" + secrets.token_hex(4)
        try:
            await trio.to_thread.run_sync(init_schema, store.engine)
            timed = _TimedStore(store)
            writes = []
            for index in range(calls_to_play):
                call_sid = f"{prefix}{index:021x}"
                writes.append(await _one_call(store, timed, call_sid))
        finally:
            with trio.move_on_after(10, shield=True):  # leave nothing behind, even on Ctrl-C
                await trio.to_thread.run_sync(_delete, store, prefix)
                await store.aclose()
    per_operation = {
        operation: {
            "count_per_call": len(samples) / calls_to_play,
            "p50_ms": sorted(samples)[len(samples) // 2] * 1000,
            "p99_ms": sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        }
        for operation, samples in timed.seconds.items()
    }
    total = sum(sum(samples) for samples in timed.seconds.values())
    return {
        "database": sa.make_url(url).get_backend_name(),
        "calls": calls_to_play,
        "writes_per_call": sum(writes) / len(writes),
        "db_ms_per_call": total / calls_to_play * 1000,
        "operations": per_operation,
    }


def _delete(store: SqlCallStore, prefix: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.delete(calls).where(calls.c.call_sid.startswith(prefix)))


def format_writes(result: dict[str, Any]) -> str:
    lines = [
        f"record writes on {result['database']}: {result['calls']} calls of {TURNS} turns and"
        f" {len(TOOLS)} tools (one with a side effect)",
        f"  writes per call: {result['writes_per_call']:.1f}; database time per call:"
        f" {result['db_ms_per_call']:.1f} ms",
    ]
    for operation, figures in sorted(result["operations"].items()):
        lines.append(
            f"  {operation:<22} {figures['count_per_call']:>5.1f}/call"
            f"  p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms"
        )
    return "\n".join(lines)
