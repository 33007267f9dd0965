"""``DriftLog``: each unknown event and ignored field is logged once per agent session."""

from __future__ import annotations

from structlog.testing import capture_logs

from archer.cartesia import managed
from archer.cartesia.drift import MAX_REMEMBERED, DriftLog


def test_each_ignored_field_and_unknown_event_is_logged_once() -> None:
    drift = DriftLog()
    message = '{"type":"turn_started","turn":1,"role":"user","start_time":"x","mood":1}'
    with capture_logs() as logs:
        for _ in range(3):
            managed.parse_server_event(message, drift.pending)
            drift.flush()
            drift.unknown_event("x_new")
    assert [(line["event"], line.get("field", line.get("type"))) for line in logs] == [
        ("agent.field_ignored", "turn_started.mood"),
        ("agent.field_ignored", "turn_started.start_time"),
        ("agent.unknown_event", "x_new"),
    ]
    assert drift.pending == []


def test_a_peer_inventing_names_forever_is_remembered_only_so_far() -> None:
    drift = DriftLog()
    with capture_logs() as logs:
        for index in range(MAX_REMEMBERED * 2):
            drift.unknown_event(f"event_{index}")
    assert len(logs) == MAX_REMEMBERED
