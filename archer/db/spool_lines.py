"""The spool's line format: a call record or a Twilio status callback as one JSON line.

Layer: pure (json and attrs only; no files, no trio). ``archer.db.spool`` writes and replays
journals of these lines; tests and tools read them back with the same functions.

Rules: a call record's line has no ``kind`` (lines spooled before status callbacks were spooled
read back unchanged); a status callback's line has ``"kind": "twilio_status"``. Times are ISO
8601 with their offset; tuples are lists. Reading a malformed line raises ``ValueError``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import attrs

from archer.call.records import (
    CallRecord,
    RecordingEventRecord,
    RecordingStatusUpdate,
    ToolCallRecord,
    TurnRecord,
    TwilioStatusUpdate,
)


def record_to_json(record: CallRecord) -> str:
    """One spool line for ``record`` (no newline)."""
    return json.dumps(attrs.asdict(record, value_serializer=_serialise), separators=(",", ":"))


def record_from_json(line: str) -> CallRecord:
    """The record of one spool line.

    Raises:
        ValueError: the line is not a spooled record.
    """
    try:
        data = json.loads(line)
        return CallRecord(
            **{
                **data,
                "started_at": _time(data["started_at"]),
                "connected_at": _time(data["connected_at"]),
                "ended_at": _time(data["ended_at"]),
                "turns": tuple(TurnRecord(**turn) for turn in data["turns"]),
                "tool_calls": tuple(
                    ToolCallRecord(
                        **{
                            **tool,
                            "started_at": _time(tool["started_at"]),
                            "finished_at": _time(tool["finished_at"]),
                        }
                    )
                    for tool in data["tool_calls"]
                ),
                # Absent from lines spooled before agent events were recorded.
                "agent_events": tuple(dict(event) for event in data.get("agent_events", ())),
                # Absent from lines spooled before reconnects were recorded (issue 16).
                "agent_call_ids": tuple(data.get("agent_call_ids", ())),
                # Absent from lines spooled before recording pauses were recorded (issue 21).
                "recording_events": tuple(
                    RecordingEventRecord(
                        **{
                            **event,
                            "requested_at": _time(event["requested_at"]),
                            "answered_at": _time(event["answered_at"]),
                        }
                    )
                    for event in data.get("recording_events", ())
                ),
            }
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a spooled call record: {exc}") from None


def _serialise(_: Any, __: Any, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


#: ``kind`` of a spooled status callback line (call records have no ``kind``).
STATUS_KIND = "twilio_status"


def status_to_json(update: TwilioStatusUpdate) -> str:
    """One spool line for a status callback (no newline)."""
    return json.dumps({"kind": STATUS_KIND, **attrs.asdict(update)}, separators=(",", ":"))


def status_from_json(line: str) -> TwilioStatusUpdate | None:
    """The status callback of one spool line; None if the line is not one (a call record).

    Raises:
        ValueError: the line says it is a status callback but is malformed.
    """
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("kind") != STATUS_KIND:
        return None
    try:
        duration = data["twilio_duration_s"]
        return TwilioStatusUpdate(
            call_sid=str(data["call_sid"]),
            twilio_status=str(data["twilio_status"]),
            twilio_duration_s=None if duration is None else int(duration),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a spooled status callback: {exc}") from None


#: ``kind`` of a spooled recording status callback line (issue 21).
RECORDING_KIND = "twilio_recording"


def recording_to_json(update: RecordingStatusUpdate) -> str:
    """One spool line for a recording status callback (no newline)."""
    return json.dumps({"kind": RECORDING_KIND, **attrs.asdict(update)}, separators=(",", ":"))


def recording_from_json(line: str) -> RecordingStatusUpdate | None:
    """The recording status callback of one spool line; None if the line is not one.

    Raises:
        ValueError: the line says it is a recording callback but is malformed.
    """
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("kind") != RECORDING_KIND:
        return None
    try:
        return RecordingStatusUpdate(
            call_sid=str(data["call_sid"]),
            recording_sid=str(data["recording_sid"]),
            status=str(data["status"]),
            channels=_optional_int(data["channels"]),
            duration_s=_optional_int(data["duration_s"]),
            url=None if data["url"] is None else str(data["url"]),
            error_code=_optional_int(data["error_code"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a spooled recording callback: {exc}") from None


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))
