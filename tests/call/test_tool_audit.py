"""Issue 19: the tool audit cannot be overwritten, and the PIN is found nowhere.

- A ``tool_call_id`` used twice in a call is refused as a duplicate and never runs again; the
  first invocation's row stays as it was (unit tier: fakes, autojump clock, then the record
  written to a real SQLite store).
- The verification secret is masked by value as well as by name: hypothesis varies how the PIN
  arrives (a string, padded, a number, a float, inside another field, nested, echoed by a
  schema validation error, repeated in a later tool call) and every byte of the database (all
  tables), the spool and the JSON logs is searched for it. The real banking tools run on the
  demo bank in SQLite; the agent and Twilio are fakes, on the real clock (PBKDF2 runs in
  threads, which the autojump clock must not be mixed with).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import attrs
import sqlalchemy as sa
import structlog
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archer.bank.ports import PinPolicy
from archer.bank.tools import bank_tools
from archer.call.session import flush_call_record
from archer.call.state import CallState
from archer.call.tools import DUPLICATE_ID, Tool, ToolContext, ToolRegistry, ToolResult
from archer.db.bank import SqlBankStore
from archer.db.engine import init_schema
from archer.db.seed import seed_demo_bank
from archer.db.spool import JsonlSpool
from archer.db.store import SqlCallStore
from archer.db.tables import customers, metadata, tool_calls
from archer.logs import configure_logging
from tests.call.test_session import Bridge, new_call
from tests.fakes.store import FakeSpool
from tests.fakes.telephony import FakeTelephony
from tests.helpers import eventually

SEED = Path(__file__).resolve().parents[2] / "archer" / "data" / "demo_bank.json"
MAYA = json.loads(SEED.read_text())["customers"][0]

# --- duplicate tool_call_id ------------------------------------------------------------------


async def test_a_repeated_tool_call_id_runs_once_and_keeps_its_row(sqlite_url: str) -> None:
    """Three calls of one id: one execution, two ``is_error`` duplicates, one row as first run."""
    runs: list[Mapping[str, object]] = []

    async def count(context: ToolContext, arguments: Mapping[str, object]) -> ToolResult:
        runs.append(arguments)
        return ToolResult({"ran": len(runs)})

    bridge = Bridge(tools=ToolRegistry.of(Tool("count", count)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        for attempt in range(3):
            bridge.agent.call_tool("call_1", "count", {"attempt": attempt})
            await trio.sleep(0.1)  # real clock: the store below runs in threads
        bridge.twilio.stop()
        await bridge.wait_done()
    assert runs == [{"attempt": 0}]
    answers = bridge.agent.sent("tool_result")
    assert answers == [
        ("call_1", '{"ran":1}', False),
        ("call_1", DUPLICATE_ID, True),
        ("call_1", DUPLICATE_ID, True),
    ]
    [recorded] = bridge.call.snapshot().tool_calls
    assert (recorded.arguments, recorded.result, recorded.is_error) == (
        {"attempt": 0},
        '{"ran":1}',
        False,
    )
    # Written to a real database (twice, as a retried flush would): still one row, the first.
    store = SqlCallStore.open(sqlite_url, pool_size=1)
    try:
        await trio.to_thread.run_sync(init_schema, store.engine)
        # The fake call's customer is not in this empty database.
        record = attrs.evolve(bridge.call.snapshot(), customer_id=None)
        await store.save_call(record)
        await store.save_call(record)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(tool_calls.c.arguments, tool_calls.c.result)).all()
    finally:
        await store.aclose()
    assert [tuple(row) for row in rows] == [({"attempt": 0}, '{"ran":1}')]


# --- the PIN, wherever and however it arrives --------------------------------------------------

#: PINs starting with 9, so a search cannot confuse one with a date, a call SID or a counter.
pins = st.from_regex(r"9[0-9]{3,7}", fullmatch=True)
#: How the agent sends the PIN (each a list of (tool, arguments) it calls in that order).
SHAPES = (
    "string",
    "padded",
    "number",
    "float",
    "in_note",
    "nested",
    "number_and_note",
    "later_call",
    "wrong_tool",
)


def calls_for(shape: str, pin: str) -> list[tuple[str, dict[str, object]]]:
    number = int(pin)
    match shape:
        case "string":
            return [("verify_caller", {"pin": pin})]
        case "padded":
            return [("verify_caller", {"pin": f"  {pin} "})]
        case "number":  # echoed by the schema's validation error
            return [("verify_caller", {"pin": number})]
        case "float":
            return [("verify_caller", {"pin": float(number)})]
        case "in_note":
            return [("verify_caller", {"pin": pin, "note": f"the caller said {pin}."})]
        case "nested":
            return [("verify_caller", {"pin": pin, "extra": {"said": [pin, number, f"#{pin}#"]}})]
        case "number_and_note":
            return [("verify_caller", {"pin": number, "note": pin})]
        case "later_call":
            return [
                ("verify_caller", {"pin": pin}),
                ("get_account_balance", {"note": f"PIN was {pin}", "digits": number}),
            ]
        case _:
            return [("get_account_balance", {"pin": pin, "account_type": "checking"})]


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")


def occurrences(pin: str, text: str) -> int:
    """How often ``pin`` stands as a number of its own in ``text`` (timestamps left out)."""
    return len(re.findall(rf"(?<![0-9]){pin}(?![0-9])", _TIMESTAMP.sub("<time>", text)))


def database_text(engine: sa.Engine) -> str:
    """Every value of every table, as text (times left out; the PIN hash is a hash)."""
    values: list[str] = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                for column, value in row.items():
                    if isinstance(value, datetime | date) or (
                        table is customers and column == "pin_hash"
                    ):
                        continue
                    values.append(json.dumps(value, default=str))
    return "\n".join(values)


async def answered(bridge: Bridge, count: int) -> bool:
    await trio.lowlevel.checkpoint()
    return len(bridge.agent.sent("tool_result")) >= count


async def play_pin_call(
    store: SqlCallStore,
    spool: JsonlSpool,
    call: CallState,
    tools: ToolRegistry,
    shape: str,
    pin: str,
) -> None:
    bridge = Bridge(call=call, tools=tools)
    requests = calls_for(shape, pin)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bridge.run)
            for n, (name, arguments) in enumerate(requests):
                bridge.agent.call_tool(f"call_{n}", name, arguments)
                await eventually(partial(answered, bridge, n + 1), interval=0.01)
            bridge.twilio.stop()
            await bridge.wait_done()
    record = call.snapshot()
    assert await flush_call_record(store, FakeSpool(), record, timeout=10)
    await spool.append(record)  # the path a record takes when the database is down


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pin=pins, shape=st.sampled_from(SHAPES))
def test_the_pin_is_stored_and_logged_nowhere(tmp_path: Path, pin: str, shape: str) -> None:
    """Whatever field or type the PIN arrives in: 0 occurrences in the database, spool, logs."""
    folder = Path(tempfile.mkdtemp(prefix=f"{shape}-{pin}-", dir=tmp_path))
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs, cache=False)
    try:
        trio.run(_pin_example, folder, shape, pin)
    finally:
        structlog.reset_defaults()
    store = SqlCallStore.open(f"sqlite:///{folder}/archer.db", pool_size=1)
    try:
        stored = database_text(store.engine)
    finally:
        store.engine.dispose()
    spooled = (folder / "spool.jsonl").read_text()
    # The call and its tool calls are really there (a search of nothing finds nothing).
    first_tool = calls_for(shape, pin)[0][0]
    assert f'"{first_tool}"' in stored
    assert f'"name":"{first_tool}"' in spooled
    assert "tool.finished" in logs.getvalue()
    assert occurrences(pin, stored) == 0
    assert occurrences(pin, spooled) == 0
    assert occurrences(pin, logs.getvalue()) == 0


async def _pin_example(folder: Path, shape: str, pin: str) -> None:
    store = SqlCallStore.open(f"sqlite:///{folder}/archer.db", pool_size=2)
    try:

        def prepare() -> int:
            init_schema(store.engine)
            seed_demo_bank(store.engine, SEED)
            with store.engine.connect() as conn:
                customer_id: int = conn.execute(
                    sa.select(customers.c.id).where(customers.c.phone_e164 == MAYA["phone_e164"])
                ).scalar_one()
            return customer_id

        customer_id = await trio.to_thread.run_sync(prepare)
        tools = bank_tools(
            SqlBankStore.from_call_store(store),
            FakeTelephony(),
            human_agent_number="+15555550199",
            pin_policy=PinPolicy(max_failures=1000, lockout_seconds=60),
            pin_entry="both",  # the agent's verify_caller(pin) is what this test masks
        )
        call = new_call()
        call.customer_id = customer_id
        call.started_at = call.connected_at = datetime.now(UTC)
        await play_pin_call(store, JsonlSpool(folder / "spool.jsonl"), call, tools, shape, pin)
    finally:
        await store.aclose()
