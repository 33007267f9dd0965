"""CallState keeps the agent's custom events, bounded in count and in size."""

from __future__ import annotations

from datetime import UTC, datetime

from archer.call.state import MAX_AGENT_EVENT_BYTES, MAX_AGENT_EVENTS, CallState

T0 = datetime(2025, 5, 1, 14, 0, tzinfo=UTC)


def state() -> CallState:
    return CallState(
        call_sid="CA0001", stream_sid="MZ0001", started_at=T0, connected_at=T0, connected_clock=0
    )


def test_events_are_kept_in_order_as_copies() -> None:
    call = state()
    sent = {"type": "intent", "intent": "balance"}

    call.agent_event(sent)
    call.agent_event({"type": "note", "n": 2})
    sent["intent"] = "changed later"

    record = call.snapshot()
    assert record.agent_events == (
        {"type": "intent", "intent": "balance"},
        {"type": "note", "n": 2},
    )
    assert call.summary()["agent_events"] == 2
    assert call.agent_events_dropped == 0


def test_a_call_without_events_snapshots_none() -> None:
    call = state()

    assert call.snapshot().agent_events == ()
    assert call.summary()["agent_events"] == 0


def test_only_the_first_events_are_kept_and_the_rest_counted() -> None:
    call = state()

    for n in range(MAX_AGENT_EVENTS + 25):
        call.agent_event({"n": n})

    events = call.snapshot().agent_events
    assert len(events) == MAX_AGENT_EVENTS == 100
    assert [event["n"] for event in events] == list(range(MAX_AGENT_EVENTS))
    assert call.agent_events_dropped == 25
    assert call.summary()["agent_events"] == MAX_AGENT_EVENTS


def test_an_oversized_event_is_replaced_by_a_marker() -> None:
    call = state()
    big = {"blob": "x" * MAX_AGENT_EVENT_BYTES}
    size = len('{"blob":""}') + MAX_AGENT_EVENT_BYTES

    call.agent_event(big)
    call.agent_event({"small": True})

    assert call.snapshot().agent_events == (
        {"truncated": True, "bytes": size},
        {"small": True},
    )
    assert call.agent_events_dropped == 0


def test_an_event_at_the_limit_is_kept() -> None:
    call = state()
    padding = MAX_AGENT_EVENT_BYTES - len('{"blob":""}')
    exact = {"blob": "y" * padding}

    call.agent_event(exact)

    assert call.snapshot().agent_events == (exact,)


def test_unserialisable_values_are_measured_not_refused() -> None:
    """Sizing uses str() for values JSON cannot encode, so an odd value never raises."""
    call = state()

    call.agent_event({"when": T0})

    assert call.snapshot().agent_events == ({"when": T0},)
