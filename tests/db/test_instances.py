"""Leases, the reaper, the status callback finishing orphans, and what wins: on both databases.

A lease counts as expired when ``lease_seconds`` is 0 (any renewal is in the past by then) and as
live with a minute, so nothing here sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
import sqlalchemy as sa
import trio

from archer.call.records import (
    CallRecord,
    NewCall,
    StreamClaim,
    ToolCallRecord,
    TurnRecord,
    TwilioStatusUpdate,
)
from archer.db.instances import ReapedCall, SqlInstances
from archer.db.store import SqlCallStore
from archer.db.tables import calls, instances

LIVE = 60.0
EXPIRED = 0.0
NOW = datetime.now(UTC)


def new_call(call_sid: str, *, started_at: datetime = NOW) -> NewCall:
    return NewCall(
        call_sid=call_sid,
        from_number="+15555550142",
        to_number="+15555550100",
        caller_e164="+15555550142",
        stream_token_hash="a" * 64,
        stream_token_expires_at=started_at + timedelta(seconds=60),
        started_at=started_at,
    )


async def carried_call(
    store: SqlCallStore, instance_id: str, call_sid: str = "CA0001"
) -> SqlCallStore:
    """A call opened and claimed by ``instance_id``, with a turn and a freeze already written."""
    carrier = attrs.evolve(store, instance_id=instance_id)
    await carrier.open_call(new_call(call_sid))
    claimed = await carrier.claim_stream(StreamClaim(call_sid, "MZ" + call_sid, "a" * 64, NOW))
    assert claimed is not None
    await carrier.save_call(in_progress(call_sid))
    return carrier


def in_progress(call_sid: str = "CA0001", *, turns: int = 1) -> CallRecord:
    return CallRecord(
        call_sid=call_sid,
        status="in_progress",
        started_at=NOW,
        connected_at=NOW,
        stream_sid="MZ" + call_sid,
        turns=tuple(
            TurnRecord(turn=n, role="assistant", text=f"Turn {n}.") for n in range(1, turns + 1)
        ),
        tool_calls=(ToolCallRecord("t1", "freeze_card", {"last4": "2207"}, started_at=NOW),),
    )


def lease(store: SqlCallStore, instance_id: str) -> SqlInstances:
    """The lease of a process that started before the calls in these tests (its own calls)."""
    return SqlInstances(store, instance_id, started_at=NOW - timedelta(days=1))


def row(store: SqlCallStore, call_sid: str = "CA0001") -> sa.Row[tuple[object, ...]]:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(calls).where(calls.c.call_sid == call_sid)).one()


def lease_renewed_at(store: SqlCallStore, instance_id: str) -> datetime:
    with store.engine.connect() as conn:
        renewed: datetime = conn.execute(
            sa.select(instances.c.renewed_at).where(instances.c.id == instance_id)
        ).scalar_one()
    return renewed


async def test_a_lease_is_created_renewed_and_retired(sql_store: SqlCallStore) -> None:
    pod = lease(sql_store, "pod-a")
    await pod.renew()
    first = await trio.to_thread.run_sync(lease_renewed_at, sql_store, "pod-a")
    await trio.sleep(0.01)
    await pod.renew()
    assert await trio.to_thread.run_sync(lease_renewed_at, sql_store, "pod-a") > first
    await pod.retire()
    with pytest.raises(sa.exc.NoResultFound):
        await trio.to_thread.run_sync(lease_renewed_at, sql_store, "pod-a")


async def test_the_claim_names_the_instance_carrying_the_stream(sql_store: SqlCallStore) -> None:
    await carried_call(sql_store, "pod-b")
    assert (await trio.to_thread.run_sync(row, sql_store)).instance_id == "pod-b"


async def test_the_reaper_leaves_calls_of_a_live_instance(sql_store: SqlCallStore) -> None:
    await carried_call(sql_store, "pod-b")
    await lease(sql_store, "pod-b").renew()

    reaped = await SqlInstances(sql_store, "pod-a", NOW).reap(
        lease_seconds=LIVE, overdue_seconds=3600
    )

    assert reaped == []
    assert (await trio.to_thread.run_sync(row, sql_store)).status == "in_progress"


async def test_the_reaper_finishes_calls_of_a_dead_instance(sql_store: SqlCallStore) -> None:
    """failed/instance_lost, ended at the lease's last renewal, turns and tool calls kept."""
    await carried_call(sql_store, "pod-b")
    await lease(sql_store, "pod-b").renew()
    last_renewal = await trio.to_thread.run_sync(lease_renewed_at, sql_store, "pod-b")

    reaped = await SqlInstances(sql_store, "pod-a", NOW).reap(
        lease_seconds=EXPIRED, overdue_seconds=3600
    )

    assert reaped == [ReapedCall("CA0001", "instance_lost", "pod-b")]
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.record.status, stored.record.end_reason) == ("failed", "instance_lost")
    assert stored.record.ended_at == last_renewal
    assert [turn.text for turn in stored.record.turns] == ["Turn 1."]
    assert [tool.name for tool in stored.record.tool_calls] == ["freeze_card"]


async def test_a_call_whose_instance_row_is_gone_is_reaped(sql_store: SqlCallStore) -> None:
    await carried_call(sql_store, "pod-gone")  # never renewed: no row at all
    reaped = await SqlInstances(sql_store, "pod-a", NOW).reap(
        lease_seconds=LIVE, overdue_seconds=3600
    )
    assert [call.end_reason for call in reaped] == ["instance_lost"]
    assert (await trio.to_thread.run_sync(row, sql_store)).ended_at is not None


async def test_an_overdue_call_is_reaped_whatever_its_lease(sql_store: SqlCallStore) -> None:
    """Past MAX_CALL_SECONDS plus the margin, even a live instance's call is finished."""
    await sql_store.open_call(new_call("CA0002", started_at=NOW - timedelta(hours=2)))
    await carried_call(sql_store, "pod-b")
    await lease(sql_store, "pod-b").renew()

    reaped = await SqlInstances(sql_store, "pod-a", NOW).reap(
        lease_seconds=LIVE, overdue_seconds=3600
    )

    assert reaped == [ReapedCall("CA0002", "overdue", None)]
    assert (await trio.to_thread.run_sync(row, sql_store, "CA0002")).status == "failed"
    assert (await trio.to_thread.run_sync(row, sql_store)).status == "in_progress"


async def test_reapers_running_at_once_reap_each_call_once(sql_store: SqlCallStore) -> None:
    for n in range(5):
        await carried_call(sql_store, "pod-dead", f"CA000{n}")
    reaped: list[ReapedCall] = []

    async def reap(instance_id: str) -> None:
        reaper = SqlInstances(sql_store, instance_id, NOW)
        reaped.extend(await reaper.reap(lease_seconds=LIVE, overdue_seconds=3600))

    async with trio.open_nursery() as nursery:
        for instance_id in ("pod-a", "pod-b", "pod-c"):
            nursery.start_soon(reap, instance_id)

    assert sorted(call.call_sid for call in reaped) == [f"CA000{n}" for n in range(5)]


async def test_a_finished_row_stays_finished_against_the_reaper(sql_store: SqlCallStore) -> None:
    carrier = await carried_call(sql_store, "pod-b")
    await carrier.save_call(
        attrs.evolve(in_progress(), status="completed", end_reason="caller_hangup", ended_at=NOW)
    )
    reaped = await SqlInstances(sql_store, "pod-a", NOW).reap(
        lease_seconds=EXPIRED, overdue_seconds=3600
    )
    assert reaped == []
    assert (await trio.to_thread.run_sync(row, sql_store)).end_reason == "caller_hangup"


async def test_a_late_write_in_progress_never_reopens_but_adds_turns(
    sql_store: SqlCallStore,
) -> None:
    """An instance back from the dead writes its turns; the reaped row stays finished."""
    carrier = await carried_call(sql_store, "pod-b")
    await SqlInstances(sql_store, "pod-a", NOW).reap(lease_seconds=EXPIRED, overdue_seconds=3600)

    await carrier.save_call(in_progress(turns=2))

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.record.status, stored.record.end_reason) == ("failed", "instance_lost")
    assert [turn.text for turn in stored.record.turns] == ["Turn 1.", "Turn 2."]


async def test_the_calls_own_final_record_replaces_a_reapers_guess(
    sql_store: SqlCallStore,
) -> None:
    """The final flush (or its spooled replay) knows how the call ended: it wins."""
    carrier = await carried_call(sql_store, "pod-b")
    await SqlInstances(sql_store, "pod-a", NOW).reap(lease_seconds=EXPIRED, overdue_seconds=3600)

    await carrier.save_call(
        attrs.evolve(in_progress(), status="completed", end_reason="caller_hangup", ended_at=NOW)
    )

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")


async def test_terminal_status_finishes_a_call_whose_instance_is_dead(
    sql_store: SqlCallStore,
) -> None:
    """Twilio's status and duration, at once, for a call no live instance carries."""
    store = attrs.evolve(sql_store, lease_seconds=EXPIRED)
    await carried_call(store, "pod-b")
    await lease(store, "pod-b").renew()

    finished = await store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", 42))

    assert finished == "instance_lost"
    stored = await store.load_call("CA0001")
    assert stored is not None
    assert (stored.record.status, stored.record.end_reason) == ("completed", "instance_lost")
    assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 42)
    assert stored.record.ended_at is not None
    assert [turn.text for turn in stored.record.turns] == ["Turn 1."]


async def test_terminal_status_leaves_a_call_a_live_instance_carries(
    sql_store: SqlCallStore,
) -> None:
    """Its own flush knows more; the callback only stores Twilio's columns."""
    await carried_call(sql_store, "pod-b")
    await lease(sql_store, "pod-b").renew()

    assert await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "busy", 0)) is None

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.status == "in_progress"
    assert stored.twilio_status == "busy"


async def test_a_status_that_is_not_terminal_finishes_nothing(sql_store: SqlCallStore) -> None:
    await sql_store.open_call(new_call("CA0001"))
    update = TwilioStatusUpdate("CA0001", "ringing", None)
    assert await sql_store.record_twilio_status(update) is None
    assert (await trio.to_thread.run_sync(row, sql_store)).status == "initiated"


async def test_the_reaper_keeps_twilios_verdict_when_it_came_first(
    sql_store: SqlCallStore,
) -> None:
    """The callback came while the lease was live; the reaper then finishes with its status."""
    await carried_call(sql_store, "pod-b")
    await lease(sql_store, "pod-b").renew()
    await sql_store.record_twilio_status(TwilioStatusUpdate("CA0001", "completed", 30))

    await SqlInstances(sql_store, "pod-a", NOW).reap(lease_seconds=EXPIRED, overdue_seconds=3600)

    record = await trio.to_thread.run_sync(row, sql_store)
    assert (record.status, record.end_reason) == ("completed", "instance_lost")


async def test_a_write_in_progress_landing_after_the_final_flush_changes_nothing_it_had(
    sql_store: SqlCallStore,
) -> None:
    """An incremental write abandoned at the call's end may commit after the final flush: it
    neither reopens the row nor rolls back a turn or tool call the flush completed."""
    carrier = await carried_call(sql_store, "pod-b")
    final = attrs.evolve(
        in_progress(),
        status="completed",
        end_reason="caller_hangup",
        ended_at=NOW,
        turns=(TurnRecord(turn=1, role="assistant", text="Turn 1, finished."),),
        tool_calls=(
            ToolCallRecord(
                "t1", "freeze_card", {"last4": "2207"}, NOW, result="{}", finished_at=NOW
            ),
        ),
    )
    await carrier.save_call(final)

    await carrier.save_call(in_progress(turns=2))  # the stale write lands late

    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert (stored.record.status, stored.record.end_reason) == ("completed", "caller_hangup")
    assert [turn.text for turn in stored.record.turns] == ["Turn 1, finished.", "Turn 2."]
    assert stored.record.tool_calls[0].finished_at == NOW


async def test_a_new_process_under_an_old_id_finishes_its_predecessors_calls(
    sql_store: SqlCallStore,
) -> None:
    """A restarted container keeps its pod's name: its first renewal finishes the calls the
    previous process left open under that id (they would look alive forever otherwise), and
    never a call it claimed itself."""
    await carried_call(sql_store, "pod-a", "CA0001")
    await lease(sql_store, "pod-a").renew()
    predecessor_renewed = await trio.to_thread.run_sync(lease_renewed_at, sql_store, "pod-a")

    successor = SqlInstances(sql_store, "pod-a", started_at=NOW + timedelta(seconds=1))
    own = attrs.evolve(sql_store, instance_id="pod-a")
    await own.open_call(new_call("CA0002"))
    claim = StreamClaim("CA0002", "MZCA0002", "a" * 64, NOW + timedelta(seconds=2))
    assert await own.claim_stream(claim) is not None

    orphans = await successor.renew()
    again = await successor.renew()

    assert orphans == [ReapedCall("CA0001", "instance_lost", "pod-a")]
    assert again == []
    stored = await sql_store.load_call("CA0001")
    assert stored is not None
    assert stored.record.ended_at == predecessor_renewed
    assert (await trio.to_thread.run_sync(row, sql_store, "CA0002")).status == "in_progress"
