"""``archer.metrics``: each method moves the right series by the right amount, labels stay bounded.

The exposition is parsed back with prometheus_client's own parser, so the tests read what
Prometheus would scrape, not the library's internals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart_trio import QuartTrio

from archer.bank.definitions import load_definitions
from archer.call.records import END_REASONS, CallRecord, RecordingEventRecord, ToolCallRecord
from archer.call.state import CallState
from archer.metrics import (
    CALL_STATUSES,
    DB_OPERATIONS,
    EITHER_DIRECTION,
    FRAME_DIRECTIONS,
    FRAME_OUTCOMES,
    OTHER,
    OVERFLOW_OUTCOMES,
    PIN_CAPTURE_LABELS,
    RECONNECT_OUTCOMES,
    RECORDING_ACTIONS,
    RECORDING_RESULTS,
    SIGNED_ROUTES,
    SILENCE_REASONS,
    TOOL_OUTCOMES,
    TWILIO_OPERATIONS,
    TWILIO_OUTCOMES,
    Metrics,
)
from archer.web.metrics import metrics_blueprint

CALL_SID = "CA" + "5f" * 16
STREAM_SID = "MZ" + "1e" * 16
CALLER = "+15555550101"
CALLED = "+15555550000"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of the exposition, keyed by (sample name, sorted labels)."""
    body, _ = metrics.render()
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def record(**changes: object) -> CallRecord:
    fields: dict[str, object] = {
        "call_sid": CALL_SID,
        "status": "completed",
        "started_at": T0,
        "stream_sid": STREAM_SID,
        "customer_id": 7,
        "from_number": CALLER,
        "to_number": CALLED,
        "end_reason": "caller_hangup",
        "agent_call_id": "agent_call_42",
        "connected_at": T0,
        "ended_at": T0 + timedelta(seconds=42),
        "duration_ms": 42_000,
        "frames_in": 2100,
        "frames_out": 1500,
        "frames_dropped": 3,
    }
    fields.update(changes)
    return CallRecord(**fields)  # type: ignore[arg-type]


def tool_call(
    name: str, *, ms: int | None, is_error: bool = False, call_id: str = "tc_1"
) -> ToolCallRecord:
    return ToolCallRecord(
        tool_call_id=call_id,
        name=name,
        arguments={"pin": "***"},
        started_at=T0,
        result="{}",
        is_error=is_error,
        finished_at=None if ms is None else T0 + timedelta(milliseconds=ms),
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def test_tool_label_defaults_to_the_tools_in_config(metrics: Metrics) -> None:
    """Without an explicit list, the tool label is bounded by archer/bank/tools.json."""
    assert metrics.tool_names == {definition.name for definition in load_definitions()}
    assert "verify_caller" in metrics.tool_names


def test_a_call_is_active_from_start_to_finish(metrics: Metrics) -> None:
    metrics.call_started()
    metrics.call_started()
    assert value(metrics, "archer_calls_active") == 2
    metrics.call_finished({"barge_ins": 0}, record())
    assert value(metrics, "archer_calls_active") == 1


def test_call_finished_counts_outcome_duration_frames_and_barge_ins(metrics: Metrics) -> None:
    metrics.call_started()
    metrics.call_finished({"barge_ins": 2}, record())
    assert value(metrics, "archer_calls_total", status="completed", end_reason="caller_hangup") == 1
    assert value(metrics, "archer_call_duration_seconds_count") == 1
    assert value(metrics, "archer_call_duration_seconds_sum") == pytest.approx(42.0)
    assert value(metrics, "archer_call_duration_seconds_bucket", le="60.0") == 1
    assert value(metrics, "archer_call_duration_seconds_bucket", le="30.0") == 0
    # One combined dropped counter: the drops cannot be attributed to a direction.
    assert value(metrics, "archer_frames_total", direction="to_agent", outcome="sent") == 2100
    assert value(metrics, "archer_frames_total", direction="to_caller", outcome="sent") == 1500
    assert value(metrics, "archer_frames_total", direction=EITHER_DIRECTION, outcome="dropped") == 3
    assert value(metrics, "archer_barge_ins_total") == 2


def test_drops_are_attributed_when_the_summary_splits_them(metrics: Metrics) -> None:
    """to_agent sent = frames received from Twilio less those dropped before the agent."""
    summary = {"barge_ins": 0, "frames_dropped_to_agent": 2, "frames_dropped_to_caller": 1}
    metrics.call_finished(summary, record())
    assert value(metrics, "archer_frames_total", direction="to_agent", outcome="sent") == 2098
    assert value(metrics, "archer_frames_total", direction="to_agent", outcome="dropped") == 2
    assert value(metrics, "archer_frames_total", direction="to_caller", outcome="sent") == 1500
    assert value(metrics, "archer_frames_total", direction="to_caller", outcome="dropped") == 1
    assert value(metrics, "archer_frames_total", direction=EITHER_DIRECTION, outcome="dropped") == 0


def test_silenced_caller_frames_are_counted_by_reason(metrics: Metrics) -> None:
    """Issue 21: frames a keypad capture silenced, and frames carrying a withheld key's tone."""
    call = CallState(
        call_sid=CALL_SID,
        stream_sid=STREAM_SID,
        started_at=T0,
        connected_at=T0,
        connected_clock=0.0,
        from_number=CALLER,
    )
    call.frames_silenced_for_pin, call.frames_silenced_for_tones = 150, 7
    call.close(now=T0 + timedelta(seconds=3), clock=3.0)
    assert value(metrics, "archer_caller_frames_silenced_total", reason="keypad_tone") == 0
    metrics.call_started()
    metrics.call_finished(call.summary(), call.snapshot())
    assert value(metrics, "archer_caller_frames_silenced_total", reason="pin_capture") == 150
    assert value(metrics, "archer_caller_frames_silenced_total", reason="keypad_tone") == 7


def test_call_finished_with_a_real_call_state_summary(metrics: Metrics) -> None:
    """What media.py will pass: CallState.summary() and CallState.snapshot()."""
    call = CallState(
        call_sid=CALL_SID,
        stream_sid=STREAM_SID,
        started_at=T0,
        connected_at=T0,
        connected_clock=0.0,
        from_number=CALLER,
    )
    call.frames_in, call.frames_out, call.barge_ins = 10, 5, 1
    call.tool_started("tc_1", "freeze_card", {"last4": "1234"}, now=T0)
    call.tool_finished("tc_1", "{}", is_error=False, now=T0 + timedelta(milliseconds=300))
    call.finish("failed", "agent_error", "closed 1011")
    call.close(now=T0 + timedelta(seconds=3), clock=3.0)
    metrics.call_started()
    metrics.call_finished(call.summary(), call.snapshot())
    assert value(metrics, "archer_calls_total", status="failed", end_reason="agent_error") == 1
    assert value(metrics, "archer_barge_ins_total") == 1
    assert value(metrics, "archer_tool_calls_total", tool="freeze_card", outcome="ok") == 1
    assert value(metrics, "archer_tool_latency_seconds_sum", tool="freeze_card") == pytest.approx(
        0.3
    )
    assert value(metrics, "archer_calls_active") == 0


def test_unknown_status_and_end_reason_become_other(metrics: Metrics) -> None:
    metrics.call_finished({}, record(status="weird", end_reason="made_up_reason"))
    metrics.call_finished({}, record(end_reason=None, duration_ms=None))
    assert value(metrics, "archer_calls_total", status=OTHER, end_reason=OTHER) == 1
    assert value(metrics, "archer_calls_total", status="completed", end_reason=OTHER) == 1
    assert value(metrics, "archer_call_duration_seconds_count") == 1


def test_tool_calls_by_tool_and_outcome_with_latency(metrics: Metrics) -> None:
    tools = (
        tool_call("verify_caller", ms=120, call_id="a"),
        tool_call("verify_caller", ms=80, is_error=True, call_id="b"),
        tool_call("get_account_balance", ms=None, call_id="c"),
        tool_call("transfer_to_human", ms=2500, call_id="d"),
    )
    metrics.call_finished({}, record(tool_calls=tools))
    assert value(metrics, "archer_tool_calls_total", tool="verify_caller", outcome="ok") == 1
    assert value(metrics, "archer_tool_calls_total", tool="verify_caller", outcome="error") == 1
    assert (
        value(metrics, "archer_tool_calls_total", tool="get_account_balance", outcome="unfinished")
        == 1
    )
    assert value(metrics, "archer_tool_latency_seconds_count", tool="verify_caller") == 2
    assert value(metrics, "archer_tool_latency_seconds_sum", tool="verify_caller") == pytest.approx(
        0.2
    )
    # An unfinished invocation has no latency to observe.
    assert value(metrics, "archer_tool_latency_seconds_count", tool="get_account_balance") == 0
    assert (
        value(metrics, "archer_tool_latency_seconds_bucket", tool="transfer_to_human", le="2.0")
        == 0
    )
    assert (
        value(metrics, "archer_tool_latency_seconds_bucket", tool="transfer_to_human", le="4.0")
        == 1
    )


def test_unknown_tool_names_become_other() -> None:
    metrics = Metrics(tool_names=["known"])
    tools = (
        tool_call("known", ms=10, call_id="a"),
        tool_call("drop_table_customers", ms=10, call_id="b"),
        tool_call(CALL_SID, ms=10, is_error=True, call_id="c"),
    )
    metrics.call_finished({}, record(tool_calls=tools))
    assert value(metrics, "archer_tool_calls_total", tool="known", outcome="ok") == 1
    assert value(metrics, "archer_tool_calls_total", tool=OTHER, outcome="ok") == 1
    assert value(metrics, "archer_tool_calls_total", tool=OTHER, outcome="error") == 1
    assert value(metrics, "archer_tool_latency_seconds_count", tool=OTHER) == 2
    body, _ = metrics.render()
    assert b"drop_table_customers" not in body


def test_agent_ready_observes_setup_time(metrics: Metrics) -> None:
    metrics.agent_ready(0.4)
    metrics.agent_ready(1.2)
    assert value(metrics, "archer_agent_setup_seconds_count") == 2
    assert value(metrics, "archer_agent_setup_seconds_sum") == pytest.approx(1.6)
    assert value(metrics, "archer_agent_setup_seconds_bucket", le="0.5") == 1


def test_frame_latency_per_direction(metrics: Metrics) -> None:
    metrics.frame_latency("to_agent", 0.000004)
    metrics.frame_latency("to_caller", 0.003)
    metrics.frame_latency("to_caller", 0.004)
    assert value(metrics, "archer_frame_latency_seconds_count", direction="to_agent") == 1
    assert value(metrics, "archer_frame_latency_seconds_count", direction="to_caller") == 2
    assert (
        value(metrics, "archer_frame_latency_seconds_bucket", direction="to_caller", le="0.0025")
        == 0
    )
    # A direction outside the fixed set is ignored rather than becoming a new series.
    metrics.frame_latency("sideways", 0.1)  # type: ignore[arg-type]
    directions = {
        dict(labels).get("direction")
        for name, labels in samples(metrics)
        if name.startswith("archer_frame_latency_seconds")
    }
    assert directions == set(FRAME_DIRECTIONS)


def test_twilio_rest_by_operation_and_outcome(metrics: Metrics) -> None:
    metrics.twilio_rest("transfer", "ok")
    metrics.twilio_rest("hang_up", "call_over")
    metrics.twilio_rest("hang_up", "refused")
    metrics.twilio_rest("redirect", "exploded")
    name = "archer_twilio_rest_requests_total"
    assert value(metrics, name, operation="transfer", outcome="ok") == 1
    assert value(metrics, name, operation="hang_up", outcome="call_over") == 1
    assert value(metrics, name, operation="hang_up", outcome="refused") == 1
    assert value(metrics, name, operation=OTHER, outcome=OTHER) == 1
    assert value(metrics, name, operation="transfer", outcome="error") == 0
    metrics.twilio_rest("pause_recording", "ok")  # issue 21: recording pauses are counted
    assert value(metrics, name, operation="pause_recording", outcome="ok") == 1
    assert value(metrics, name, operation="resume_recording", outcome="ok") == 0


def test_db_operation_latency_and_errors(metrics: Metrics) -> None:
    metrics.db_operation("save_call", 0.02, error=False)
    metrics.db_operation("save_call", 5.0, error=True)
    metrics.db_operation("DROP TABLE calls", 0.001, error=True)
    assert value(metrics, "archer_db_operation_seconds_count", operation="save_call") == 2
    assert value(
        metrics, "archer_db_operation_seconds_sum", operation="save_call"
    ) == pytest.approx(5.02)
    assert value(metrics, "archer_db_errors_total", operation="save_call") == 1
    assert value(metrics, "archer_db_errors_total", operation="open_call") == 0
    assert value(metrics, "archer_db_errors_total", operation=OTHER) == 1


def test_spool_depth_is_a_gauge(metrics: Metrics) -> None:
    metrics.spool_depth(3)
    assert value(metrics, "archer_spool_depth") == 3
    metrics.spool_depth(0)
    assert value(metrics, "archer_spool_depth") == 0


def test_signature_rejections_by_route(metrics: Metrics) -> None:
    metrics.signature_rejected("/twilio/voice")
    metrics.signature_rejected("/ws/cartesia")
    metrics.signature_rejected("/admin/../../etc/passwd")
    name = "archer_signature_rejections_total"
    assert value(metrics, name, route="/twilio/voice") == 1
    assert value(metrics, name, route="/ws/cartesia") == 1
    assert value(metrics, name, route="/twilio/status") == 0
    assert value(metrics, name, route=OTHER) == 1


def test_apologies(metrics: Metrics) -> None:
    metrics.apology()
    metrics.apology()
    assert value(metrics, "archer_webhook_apologies_total") == 2


def test_counters_and_histograms_start_at_zero(metrics: Metrics) -> None:
    """Fixed label sets are exported before anything happens, so alerts see zero, not absence."""
    found = samples(metrics)
    assert found[("archer_frames_total", (("direction", "to_agent"), ("outcome", "dropped")))] == 0
    assert found[("archer_db_errors_total", (("operation", "save_call"),))] == 0
    assert found[("archer_signature_rejections_total", (("route", "/ws/cartesia"),))] == 0
    assert found[("archer_calls_active", ())] == 0
    assert found[("archer_spool_depth", ())] == 0


def test_no_label_is_ever_a_call_sid_or_a_phone_number(metrics: Metrics) -> None:
    """Feed everything a call can carry; every label value is from a fixed enumeration."""
    tools = (
        tool_call("verify_caller", ms=5, call_id=CALL_SID),
        tool_call(CALLER, ms=5, call_id="x"),
    )
    metrics.call_started()
    metrics.call_finished(
        {"barge_ins": 1, "agent_call_id": "agent_call_42", "call_sid": CALL_SID},
        record(tool_calls=tools, end_reason=CALL_SID, status=CALLER),
    )
    metrics.agent_ready(0.3)
    metrics.frame_latency("to_agent", 0.001)
    metrics.twilio_rest(CALL_SID, CALLER)
    metrics.db_operation(CALL_SID, 0.01, error=True)
    metrics.signature_rejected(f"/twilio/voice?CallSid={CALL_SID}")
    body, _ = metrics.render()
    text = body.decode()
    for secret in (CALL_SID, STREAM_SID, CALLER, CALLED, CALLER.lstrip("+"), "agent_call_42"):
        assert secret not in text

    allowed: dict[str, set[str]] = {
        "status": {*CALL_STATUSES, OTHER},
        "end_reason": {*END_REASONS, OTHER},
        "direction": {*FRAME_DIRECTIONS, EITHER_DIRECTION},
        "outcome": {
            *FRAME_OUTCOMES,
            *TOOL_OUTCOMES,
            *TWILIO_OUTCOMES,
            *OVERFLOW_OUTCOMES,
            *RECONNECT_OUTCOMES,
            *PIN_CAPTURE_LABELS,
            OTHER,
        },
        "action": set(RECORDING_ACTIONS),
        "result": set(RECORDING_RESULTS),
        "tool": {*metrics.tool_names, OTHER},
        "operation": {*TWILIO_OPERATIONS, *DB_OPERATIONS, OTHER},
        "route": {*SIGNED_ROUTES, OTHER},
        "reason": set(SILENCE_REASONS),
    }
    seen = 0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("archer_"):
            continue  # process_* from the process collector: no labels
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                if label in ("le", "quantile"):
                    continue
                assert label in allowed, (family.name, label)
                assert label_value in allowed[label], (family.name, label, label_value)
                seen += 1
    assert seen > 0


def test_names_follow_prometheus_conventions(metrics: Metrics) -> None:
    """archer_ prefix, counters end in _total, units in the names of timed series."""
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        if family.name.startswith("process_"):
            continue
        assert family.name.startswith("archer_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")


def test_two_instances_do_not_share_state() -> None:
    first, second = Metrics(), Metrics()
    first.call_started()
    first.apology()
    first.db_operation("check", 0.5, error=True)
    assert value(first, "archer_calls_active") == 1
    assert value(second, "archer_calls_active") == 0
    assert value(second, "archer_webhook_apologies_total") == 0
    assert value(second, "archer_db_errors_total", operation="check") == 0
    assert first.registry is not second.registry


async def test_blueprint_serves_the_text_format(metrics: Metrics) -> None:
    metrics.call_started()
    app = QuartTrio("metrics-test")
    app.register_blueprint(metrics_blueprint(metrics))
    response = await app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert "version=" in response.content_type
    body = await response.get_data(as_text=True)
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert families["archer_calls_active"].samples[0].value == 1
    assert families["archer_calls"].type == "counter"


def pin_capture(outcome: str | None, *, call_id: str, finished: bool = True) -> ToolCallRecord:
    return ToolCallRecord(
        tool_call_id=call_id,
        name="collect_pin",
        arguments={},
        started_at=T0,
        result="{}" if finished else None,
        is_error=outcome != "verified",
        finished_at=T0 + timedelta(seconds=9) if finished else None,
        outcome=outcome,
    )


def recording_event(
    seq: int, action: str, *, accepted: bool, code: int | None = None
) -> RecordingEventRecord:
    return RecordingEventRecord(
        seq=seq,
        action=action,  # type: ignore[arg-type]
        requested_at=T0,
        answered_at=T0,
        accepted=accepted,
        error_code=code,
    )


async def test_pin_captures_by_outcome_and_recording_requests_through_the_route(
    metrics: Metrics,
) -> None:
    """Issue 21: ``/metrics`` counts keypad entries by outcome (an outcome outside the fixed set
    is ``other``; an entry never finished is ``unfinished``) and the recording's pauses and
    resumes by result; no label holds a digit or a count of digits."""
    captures = (
        pin_capture("wrong_pin", call_id="p1"),
        pin_capture("verified", call_id="p2"),
        pin_capture("hang_up", call_id="p3"),
        pin_capture("4821", call_id="p4"),  # never a label value, whatever a record holds
        pin_capture(None, call_id="p5", finished=False),
    )
    events = (
        recording_event(1, "pause", accepted=True),
        recording_event(2, "resume", accepted=True),
        recording_event(3, "pause", accepted=False, code=20404),
        recording_event(4, "pause", accepted=False),
    )
    metrics.call_started()
    tools = (*captures, tool_call("verify_caller", ms=5))
    metrics.call_finished({}, record(tool_calls=tools, recording_events=events))
    app = QuartTrio("metrics-test")
    app.register_blueprint(metrics_blueprint(metrics))
    response = await app.test_client().get("/metrics")
    body = await response.get_data(as_text=True)
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name in ("archer_pin_captures_total", "archer_recording_requests_total")
    }
    assert {labels[0][1]: n for (_, labels), n in found.items() if n and len(labels) == 1} == {
        "wrong_pin": 1,
        "verified": 1,
        "hang_up": 1,
        OTHER: 1,
        "unfinished": 1,
    }
    assert {labels: n for (_, labels), n in found.items() if n and len(labels) == 2} == {
        (("action", "pause"), ("result", "accepted")): 1,
        (("action", "resume"), ("result", "accepted")): 1,
        (("action", "pause"), ("result", "refused")): 1,
        (("action", "pause"), ("result", "error")): 1,
    }
    # Every outcome is exported from the start (zero until it happens).
    assert {labels[0][1] for (_, labels) in found if len(labels) == 1} == {
        *PIN_CAPTURE_LABELS,
        OTHER,
    }
    # In no label of any series (the body as a whole holds timestamps, which may hold anything).
    labels = {
        label_value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        for label_value in sample.labels.values()
    }
    assert not [label_value for label_value in labels if "4821" in label_value]
