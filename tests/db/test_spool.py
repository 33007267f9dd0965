"""The spool's JSON lines and its append/replay journal, against the fake call store."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import trio

from archer.call.records import (
    CallRecord,
    RecordingEventRecord,
    RecordingStatusUpdate,
    ToolCallRecord,
    TurnRecord,
    TwilioStatusUpdate,
)
from archer.db.spool import JsonlSpool
from archer.db.spool_lines import record_from_json, record_to_json
from tests.fakes.store import FakeCallStore

T0 = datetime(2025, 5, 1, 14, 0, 0, 250000, tzinfo=UTC)


def full_record(call_sid: str = "CA0001") -> CallRecord:
    return CallRecord(
        call_sid=call_sid,
        status="completed",
        started_at=T0,
        stream_sid="MZ0001",
        customer_id=7,
        from_number="+15555550142",
        to_number="+15555550100",
        end_reason="caller_hangup",
        agent_call_id="agent-call-1",
        connected_at=T0 + timedelta(seconds=2),
        ended_at=T0 + timedelta(seconds=95),
        duration_ms=93_000,
        frames_in=4650,
        frames_out=3900,
        frames_dropped=3,
        frames_silenced_for_pin=212,
        frames_silenced_for_tones=15,
        dtmf_dropped=2,
        turns=(
            TurnRecord(turn=0, role="assistant", text="Hello.", start_time=0.4, heard_ms=700),
            TurnRecord(turn=1, role="user", text="Balance?", interrupted=True, end_time=4.0),
        ),
        tool_calls=(
            ToolCallRecord(
                tool_call_id="tool-1",
                name="get_balance",
                arguments={"account": "checking", "last4": "4821"},
                started_at=T0 + timedelta(seconds=4),
                result='{"balance_cents": 254310}',
                finished_at=T0 + timedelta(seconds=4, milliseconds=80),
            ),
            ToolCallRecord(
                tool_call_id="tool-2",
                name="freeze_card",
                arguments={},
                started_at=T0 + timedelta(seconds=9),
            ),
            ToolCallRecord(
                tool_call_id="pin-1",
                name="collect_pin",
                arguments={},
                started_at=T0 + timedelta(seconds=20),
                result="collect_pin was cut off by caller_hangup; no result",
                is_error=True,
                finished_at=T0 + timedelta(seconds=95),
                outcome="hang_up",
            ),
        ),
        agent_events=(
            {"type": "intent", "intent": "balance", "confidence": 0.93},
            {"type": "note", "tags": ["vip"], "nested": {"a": 1, "b": None}},
        ),
        recording_events=(
            RecordingEventRecord(
                seq=1,
                action="pause",
                requested_at=T0 + timedelta(seconds=20, milliseconds=5),
                answered_at=T0 + timedelta(seconds=20, milliseconds=180),
                accepted=True,
                recording_sid="RE" + "0" * 32,
            ),
            RecordingEventRecord(
                seq=2,
                action="resume",
                requested_at=T0 + timedelta(seconds=95),
                answered_at=T0 + timedelta(seconds=95, milliseconds=90),
                accepted=False,
                error_code=21220,
            ),
        ),
    )


def test_record_round_trips_through_json() -> None:
    """Every field, including datetimes, turns, tool calls (with their outcome), agent events
    and recording pauses, survives a line."""
    record = full_record()

    line = record_to_json(record)

    assert "\n" not in line
    assert record_from_json(line) == record


def test_minimal_record_round_trips() -> None:
    """A record with only the required fields (None times, empty tuples) survives too."""
    record = CallRecord(call_sid="CA0002", status="failed", started_at=T0)

    assert record_from_json(record_to_json(record)) == record


def test_times_come_back_aware_utc() -> None:
    """Spooled datetimes read back as the same aware instants."""
    back = record_from_json(record_to_json(full_record()))

    assert back.started_at.tzinfo is not None
    assert back.tool_calls[0].finished_at == T0 + timedelta(seconds=4, milliseconds=80)
    assert back.recording_events[0].requested_at.tzinfo is not None


def test_line_from_before_agent_events_still_reads() -> None:
    """A line spooled by a version without agent events reads back with none."""
    record = full_record()
    line = record_to_json(attrs.evolve(record, agent_events=()))
    old_line = line.replace(',"agent_events":[]', "")
    assert "agent_events" not in old_line

    assert record_from_json(old_line) == attrs.evolve(record, agent_events=())


def test_line_from_before_recording_events_still_reads() -> None:
    """A line spooled before issue 21's records (no ``recording_events``, no tool ``outcome``)
    reads back with none."""
    record = full_record()
    before = attrs.evolve(
        record,
        recording_events=(),
        tool_calls=tuple(attrs.evolve(tool, outcome=None) for tool in record.tool_calls),
    )
    old_line = (
        record_to_json(before).replace(',"recording_events":[]', "").replace(',"outcome":null', "")
    )
    assert "recording_events" not in old_line
    assert "outcome" not in old_line

    assert record_from_json(old_line) == before


@pytest.mark.parametrize("line", ["{}", "[]", '{"call_sid": "CA1"}', '"text"'])
def test_a_line_that_is_not_a_record_is_a_value_error(line: str) -> None:
    with pytest.raises(ValueError, match="not a spooled call record"):
        record_from_json(line)


async def test_append_then_replay_saves_every_record(tmp_path: Path) -> None:
    """Appended records are replayed into the store in order, and the spool empties."""
    spool = JsonlSpool(tmp_path / "spool" / "calls.jsonl")
    store = FakeCallStore()
    first, second = full_record("CA0001"), full_record("CA0002")

    await spool.append(first)
    await spool.append(second)
    assert await spool.depth() == 2

    assert await spool.replay(store) == 0
    assert store.calls == {"CA0001": first, "CA0002": second}
    assert store.calls["CA0001"].agent_events == first.agent_events
    assert await spool.depth() == 0
    assert not spool.path.exists()


async def test_replay_keeps_records_while_the_store_is_down(tmp_path: Path) -> None:
    """A store that fails leaves every record in the spool for the next replay."""
    spool = JsonlSpool(tmp_path / "calls.jsonl")
    store = FakeCallStore(down=True)
    await spool.append(full_record())

    assert await spool.replay(store) == 1
    assert store.calls == {}

    store.down = False
    assert await spool.replay(store) == 0
    assert store.calls["CA0001"] == full_record()


async def test_replay_keeps_an_unreadable_line(tmp_path: Path) -> None:
    """A line that is not a record is kept for a person to look at; the rest replay."""
    path = tmp_path / "calls.jsonl"
    spool = JsonlSpool(path)
    await spool.append(full_record())
    with path.open("a", encoding="utf-8") as journal:
        journal.write("{not json at all\n")
    store = FakeCallStore()

    assert await spool.replay(store) == 1
    assert list(store.calls) == ["CA0001"]
    assert path.read_text(encoding="utf-8") == "{not json at all\n"


async def test_status_callbacks_replay_after_the_call_records(tmp_path: Path) -> None:
    """A status spooled before its call record still lands after it; both are kept while the
    store is down."""
    spool = JsonlSpool(tmp_path / "calls.jsonl")
    update = TwilioStatusUpdate("CA0001", "completed", 93)
    await spool.append_status(update)
    await spool.append(full_record())
    store = FakeCallStore(down=True)

    assert await spool.replay(store) == 2
    store.down = False
    assert await spool.replay(store) == 0

    assert store.writes == [("save_call", "CA0001"), ("record_twilio_status", "CA0001")]
    assert store.statuses["CA0001"] == update


def test_each_instance_has_its_journal_in_the_spool_directory(tmp_path: Path) -> None:
    spool = JsonlSpool.for_instance(tmp_path / "spool" / "calls.jsonl", "pod-a")
    assert spool.path == tmp_path / "spool" / "calls.pod-a.jsonl"
    assert spool.family == tmp_path / "spool" / "calls.jsonl"


async def test_a_journal_whose_writer_lives_is_left_to_it(tmp_path: Path) -> None:
    """Another instance replays a journal only once its writer is gone (its lock released);
    then the journal and its lock file are removed."""
    spool_path = tmp_path / "calls.jsonl"
    alive = JsonlSpool.for_instance(spool_path, "pod-a")
    other = JsonlSpool.for_instance(spool_path, "pod-b")
    store = FakeCallStore()
    with alive.hold():
        await alive.append(full_record())
        assert await other.replay(store) == 1  # waiting, in pod-a's journal
        assert store.calls == {}
    # pod-a is gone (a process's flock dies with it, however it dies).
    assert await other.replay(store) == 0
    assert list(store.calls) == ["CA0001"]
    assert await trio.to_thread.run_sync(os.listdir, tmp_path) == []


async def test_journals_of_older_versions_are_replayed_too(tmp_path: Path) -> None:
    """``SPOOL_PATH`` itself and ``--workers`` journals (``calls.worker1.jsonl``) of before."""
    for path in (tmp_path / "calls.jsonl", tmp_path / "calls.worker1.jsonl"):
        path.write_text(record_to_json(full_record(path.stem[-4:])) + "\n", encoding="utf-8")
    store = FakeCallStore()
    assert await JsonlSpool.for_instance(tmp_path / "calls.jsonl", "pod-b").replay(store) == 0
    assert sorted(store.calls) == ["alls", "ker1"]


def test_one_journal_cannot_be_held_twice(tmp_path: Path) -> None:
    """Two live processes with one INSTANCE_ID would write one journal: the second is refused."""
    spool = JsonlSpool.for_instance(tmp_path / "calls.jsonl", "pod-a")
    twin = JsonlSpool.for_instance(tmp_path / "calls.jsonl", "pod-a")
    with spool.hold(), pytest.raises(OSError, match="another live process"), twin.hold():
        pass


async def test_recording_callbacks_are_spooled_and_replayed_after_the_calls(
    tmp_path: Path,
) -> None:
    """Issue 21: a recording callback the database did not take is kept, then replayed after
    the call records and status callbacks."""
    spool = JsonlSpool(tmp_path / "calls.jsonl")
    update = RecordingStatusUpdate(
        "CA0001", "RE" + "3" * 32, "completed", channels=2, duration_s=12, url=None, error_code=None
    )
    await spool.append_recording(update)
    await spool.append(full_record())
    store = FakeCallStore(down=True)

    assert await spool.replay(store) == 2
    store.down = False
    assert await spool.replay(store) == 0
    assert store.writes[0] == ("save_call", "CA0001")
    assert store.recordings == {update.recording_sid: update}
