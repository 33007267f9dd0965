"""Contract: ``RecordSpool``, one suite against ``FakeSpool`` and the real ``JsonlSpool``.

Layer: contract tests. The call, the recorder and the web routes are tested against
``tests.fakes.store.FakeSpool``; this suite proves the fake keeps what the real journal keeps,
through the port alone: a call record, a status callback and a recording callback come back
exactly as appended, and a disk that refuses is an ``OSError`` from every append, with nothing
kept. "Comes back" is the fake's lists for the fake, and what the journal's replay hands a call
store for the real one (its only reader).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from archer.call.ports import RecordSpool
from archer.call.records import (
    CallRecord,
    RecordingStatusUpdate,
    ToolCallRecord,
    TurnRecord,
    TwilioStatusUpdate,
)
from archer.db.spool import JsonlSpool
from tests.fakes.store import FakeCallStore, FakeSpool

T0 = datetime(2026, 12, 6, 9, 30, 0, 125000, tzinfo=UTC)
RECORD = CallRecord(
    call_sid="CA0001",
    status="completed",
    started_at=T0,
    stream_sid="MZ0001",
    customer_id=7,
    end_reason="caller_hangup",
    ended_at=T0 + timedelta(seconds=40),
    duration_ms=40_000,
    turns=(TurnRecord(turn=0, role="assistant", text="Hello.", start_time=0.4),),
    tool_calls=(
        ToolCallRecord(
            tool_call_id="tool-1",
            name="get_balance",
            arguments={"account": "checking"},
            started_at=T0 + timedelta(seconds=4),
            result='{"balance_cents": 254310}',
            finished_at=T0 + timedelta(seconds=4, milliseconds=80),
        ),
    ),
)
STATUS = TwilioStatusUpdate(call_sid="CA0001", twilio_status="completed", twilio_duration_s=41)
RECORDING = RecordingStatusUpdate(
    call_sid="CA0001",
    recording_sid="RE0001",
    status="completed",
    channels=2,
    duration_s=39,
    url="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0001",
)


#: The fake's refusal (a full disk), and the real one's here: its directory is a regular file.
REFUSED = "No space left on device|File exists"


@attrs.define
class Kept:
    records: list[CallRecord]
    statuses: list[TwilioStatusUpdate]
    recordings: list[RecordingStatusUpdate]


@attrs.define
class Subject:
    spool: RecordSpool
    kept: Callable[[], Awaitable[Kept]]


@pytest.fixture(params=["fake", "jsonl"])
def working(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return _subject(request.param, tmp_path / "spool" / "calls.jsonl")


@pytest.fixture(params=["fake", "jsonl"])
def refusing(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    # The real journal's directory is a regular file: every write is refused by the OS.
    (tmp_path / "not-a-directory").write_text("")
    return _subject(request.param, tmp_path / "not-a-directory" / "calls.jsonl", broken=True)


def _subject(kind: str, path: Path, *, broken: bool = False) -> Subject:
    if kind == "fake":
        fake = FakeSpool(broken=broken)

        async def fake_kept() -> Kept:
            return Kept(list(fake.records), list(fake.statuses), list(fake.recordings))

        return Subject(fake, fake_kept)
    real = JsonlSpool(path)

    async def replayed() -> Kept:
        store = FakeCallStore()
        try:
            assert await real.replay(store) == 0
        except NotADirectoryError:
            assert broken, "only the refusing journal's directory is a regular file"
            # Where no journal could be written, no journal can be read: nothing was kept.
        return Kept(
            list(store.calls.values()),
            list(store.statuses.values()),
            list(store.recordings.values()),
        )

    return Subject(real, replayed)


async def test_what_is_appended_comes_back_exactly(working: Subject) -> None:
    await working.spool.append(RECORD)
    await working.spool.append_status(STATUS)
    await working.spool.append_recording(RECORDING)
    assert await working.kept() == Kept([RECORD], [STATUS], [RECORDING])


async def test_a_refusing_disk_is_an_os_error_and_keeps_nothing(refusing: Subject) -> None:
    with pytest.raises(OSError, match=REFUSED):
        await refusing.spool.append(RECORD)
    with pytest.raises(OSError, match=REFUSED):
        await refusing.spool.append_status(STATUS)
    with pytest.raises(OSError, match=REFUSED):
        await refusing.spool.append_recording(RECORDING)
    assert await refusing.kept() == Kept([], [], [])
