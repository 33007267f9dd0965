"""The contract validators accept what Archer's builders produce and reject broken messages."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft7Validator

from archer.cartesia import managed
from archer.twilio.frames import OutboundFrames
from tests.contract import schemas
from tests.contract.schemas import (
    validate_cartesia_client_message,
    validate_cartesia_server_message,
    validate_twilio_inbound,
    validate_twilio_outbound,
)

PAYLOAD = "//79/Pv6+fj39vX08/Lx8A=="
STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"


def _without(text: str, *path: str) -> str:
    message = json.loads(text)
    parent = message
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return json.dumps(message)


def _with(text: str, value: Any, *path: str) -> str:
    message = json.loads(text)
    parent = message
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return json.dumps(message)


# ---- the documents ------------------------------------------------------------------------


@pytest.mark.skipif(not schemas.SHARED_REFERENCE.is_dir(), reason="no ../shared/reference here")
def test_vendored_copies_equal_shared_references() -> None:
    """The vendored schema documents are byte-for-byte the shared reference copies."""
    vendored = schemas.VENDORED
    assert (vendored / schemas.CARTESIA_SCHEMA_NAME).read_bytes() == (
        schemas.CARTESIA_SHARED.read_bytes()
    )
    assert (vendored / schemas.TWILIO_SCHEMA_NAME).read_bytes() == (
        schemas.TWILIO_SHARED.read_bytes()
    )


def test_every_component_schema_is_valid_draft7() -> None:
    """Each component schema the validators use is itself a valid draft-7 schema."""
    cartesia = schemas.cartesia_document()["components"]["schemas"]
    twilio = schemas.twilio_document()["components"]["schemas"]
    for name in [
        *schemas.CARTESIA_CLIENT_MESSAGES.values(),
        *schemas.CARTESIA_SERVER_MESSAGES.values(),
    ]:
        Draft7Validator.check_schema(cartesia[name])
    for name in [
        *schemas.TWILIO_INBOUND_MESSAGES.values(),
        *schemas.TWILIO_OUTBOUND_MESSAGES.values(),
    ]:
        Draft7Validator.check_schema(twilio[name])


def test_cartesia_tables_match_the_documents_operations() -> None:
    """The client/server tables agree with the document's send/receive operations and types."""
    document = schemas.cartesia_document()
    by_action: dict[str, set[str]] = {"send": set(), "receive": set()}
    for operation in document["operations"].values():
        for ref in operation["messages"]:
            by_action[operation["action"]].add(ref["$ref"].rsplit("/", 1)[1])
    assert set(schemas.CARTESIA_CLIENT_MESSAGES.values()) == by_action["send"]
    assert set(schemas.CARTESIA_SERVER_MESSAGES.values()) == by_action["receive"]
    components = document["components"]["schemas"]
    for table in (schemas.CARTESIA_CLIENT_MESSAGES, schemas.CARTESIA_SERVER_MESSAGES):
        for kind, name in table.items():
            assert components[name]["properties"]["type"]["enum"] == [kind]


def test_twilio_tables_match_the_documents_operations() -> None:
    """The inbound/outbound tables agree with the media-streams channel and event consts."""
    document = schemas.twilio_document()
    channel = document["channels"]["media-streams"]

    def payloads(operation: str) -> set[str]:
        names = set()
        for ref in channel[operation]["message"]["oneOf"]:
            message = document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            names.add(message["payload"]["$ref"].rsplit("/", 1)[1])
        return names

    # AsyncAPI 2 names operations from the application's side: it subscribes to what it receives.
    assert set(schemas.TWILIO_INBOUND_MESSAGES.values()) == payloads("subscribe")
    assert set(schemas.TWILIO_OUTBOUND_MESSAGES.values()) == payloads("publish")
    components = document["components"]["schemas"]
    for table in (schemas.TWILIO_INBOUND_MESSAGES, schemas.TWILIO_OUTBOUND_MESSAGES):
        for event, name in table.items():
            assert components[name]["properties"]["event"]["const"] == event


def test_closed_leaves_properties_named_properties_alone() -> None:
    """closed() adds additionalProperties:false to schemas only, not to property maps."""
    schema = {
        "type": "object",
        "properties": {"properties": {"type": "object", "properties": {"a": {}}}},
    }
    assert schemas.closed(schema) == {
        "type": "object",
        "properties": {
            "properties": {
                "type": "object",
                "properties": {"a": {}},
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    }


# ---- Cartesia: what Archer's builders produce passes ----------------------------------------


def test_cartesia_client_builders_pass() -> None:
    """Every client message managed.py builds validates against the published schema."""
    for text in (
        managed.session_create(input_format="mulaw_8000", dynamic_variables={}),
        managed.session_create(
            input_format="pcm_44100",
            dynamic_variables={"caller_number": "+15551230000", "n": 3, "x": 1.5, "ok": False},
            output_delivery="as_available",
        ),
        managed.audio_input(PAYLOAD),
        managed.dtmf_input("#"),
        managed.client_tool_result("call_1", "ok", is_error=False),
        managed.client_tool_result("call_1", "", is_error=True, error_type="timeout"),
    ):
        validate_cartesia_client_message(text)


def test_cartesia_server_builders_pass() -> None:
    """Every server message managed.py builds validates against the published schema."""
    for text in (
        managed.session_ready(
            call_id="ac_1",
            agent_id="agent_1",
            agent_version_id="av_1",
            input_format="mulaw_8000",
            output_delivery="speaking_pace",
        ),
        managed.audio_output(PAYLOAD),
        managed.audio_output_clear(),
        managed.dtmf_output("5"),
        managed.client_tool_call("c1", "freeze_card", {"card": "1234"}, expects_response=True),
        managed.turn_started(1, "user", 0.25),
        managed.turn_output_text_delta(2, " Hello"),
        managed.turn_ended(
            2,
            "assistant",
            "Hello",
            interrupted=False,
            start_time=1,
            end_time=2.5,
            tool_calls=[{"name": "freeze_card", "arguments": {"card": "1234"}, "id": "c1"}],
        ),
        managed.error("invalid_event", "bad digit", fatal=False),
    ):
        validate_cartesia_server_message(text)


# ---- Cartesia: broken messages are rejected ------------------------------------------------

_SESSION_CREATE = managed.session_create(input_format="mulaw_8000", dynamic_variables={"a": "b"})
_TURN_ENDED = managed.turn_ended(1, "user", "hi", interrupted=False, start_time=0, end_time=1)
_TOOL_CALL = managed.client_tool_call("c1", "t", {}, expects_response=False)


@pytest.mark.parametrize(
    "text",
    [
        _without(_SESSION_CREATE, "audio"),
        _without(_SESSION_CREATE, "audio", "input_format"),
        _with(_SESSION_CREATE, "pcm_8000", "audio", "input_format"),
        _with(_SESSION_CREATE, 1, "extra"),
        _with(_SESSION_CREATE, 1, "audio", "extra"),
        _with(_SESSION_CREATE, {"a": None}, "dynamic_variables"),
        _with(_SESSION_CREATE, {f"v{i}": i for i in range(65)}, "dynamic_variables"),
        _without(managed.audio_input(PAYLOAD), "audio"),
        _with(managed.audio_input(PAYLOAD), 7, "audio"),
        managed.audio_input("not base64!"),
        _with(managed.dtmf_input("1"), "A", "digit"),
        _with(managed.dtmf_input("1"), "12", "digit"),
        _without(managed.client_tool_result("c", "r", is_error=False), "result"),
        _with(managed.client_tool_result("c", "r", is_error=False), "no", "is_error"),
        _with(managed.client_tool_result("c", "r", is_error=False), "c" * 257, "tool_call_id"),
    ],
)
def test_broken_cartesia_client_messages_fail(text: str) -> None:
    """Client messages with a missing, mistyped, extra or out-of-range field are rejected."""
    with pytest.raises(jsonschema.ValidationError):
        validate_cartesia_client_message(text)


@pytest.mark.parametrize(
    "text",
    [
        _without(managed.audio_output(PAYLOAD), "audio"),
        managed.audio_output("%%%"),
        _without(_TOOL_CALL, "expects_response"),
        _with(_TOOL_CALL, "yes", "expects_response"),
        _with(_TOOL_CALL, [], "parameters"),
        _with(managed.turn_started(1, "user", 0), True, "turn"),
        _with(managed.turn_started(1, "user", 0), 1.5, "turn"),
        _with(managed.turn_started(1, "user", 0), "system", "role"),
        _with(managed.turn_started(1, "user", 0), "0", "start_time"),
        _with(managed.turn_output_text_delta(1, "x"), "user", "role"),
        _without(_TURN_ENDED, "tool_calls"),
        _without(_TURN_ENDED, "interrupted"),
        _with(_TURN_ENDED, [{"name": "t"}], "tool_calls"),
        _without(managed.error("agent_failed", "m", fatal=True), "fatal"),
        _with(managed.error("agent_failed", "m", fatal=True), "oops", "code"),
        _without(
            managed.session_ready(
                call_id="a",
                agent_id="b",
                agent_version_id="c",
                input_format="mulaw_8000",
                output_delivery="speaking_pace",
            ),
            "agent_version_id",
        ),
    ],
)
def test_broken_cartesia_server_messages_fail(text: str) -> None:
    """Server messages with a missing, mistyped or out-of-range field are rejected."""
    with pytest.raises(jsonschema.ValidationError):
        validate_cartesia_server_message(text)


@pytest.mark.parametrize(
    ("validator", "text"),
    [
        (validate_cartesia_client_message, '{"type":"text_input","text":"hi"}'),
        (validate_cartesia_client_message, managed.audio_output(PAYLOAD)),
        (validate_cartesia_server_message, managed.audio_input(PAYLOAD)),
        (validate_cartesia_server_message, '{"audio":"AA=="}'),
    ],
)
def test_unknown_cartesia_types_fail(validator: Any, text: str) -> None:
    """A type that is not a message in that direction fails with AssertionError."""
    with pytest.raises(AssertionError, match="no message has type"):
        validator(text)


def test_non_json_and_non_objects_fail() -> None:
    """Text that is not a JSON object fails validation."""
    with pytest.raises(jsonschema.ValidationError, match="not JSON"):
        validate_cartesia_server_message("{oops")
    with pytest.raises(jsonschema.ValidationError, match="not a JSON object"):
        validate_twilio_outbound("[]")


# ---- Twilio outbound: OutboundFrames passes, anything extra or broken fails ------------------


def test_outbound_frames_pass() -> None:
    """media, mark and clear from OutboundFrames validate against the closed schemas."""
    frames = OutboundFrames(STREAM_SID)
    validate_twilio_outbound(frames.media(PAYLOAD))
    validate_twilio_outbound(frames.mark('resp-1 "chunk" 7'))
    validate_twilio_outbound(frames.clear)


@pytest.mark.parametrize(
    "text",
    [
        _with(OutboundFrames(STREAM_SID).clear, "x", "track"),
        _with(OutboundFrames(STREAM_SID).media(PAYLOAD), "1", "sequenceNumber"),
        _with(OutboundFrames(STREAM_SID).media(PAYLOAD), "inbound", "media", "track"),
        _with(OutboundFrames(STREAM_SID).mark("m"), 1, "mark", "extra"),
    ],
)
def test_twilio_outbound_rejects_undeclared_keys(text: str) -> None:
    """An extra top-level or nested key fails, since Twilio warns 31951 on it."""
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        validate_twilio_outbound(text)


@pytest.mark.parametrize(
    "text",
    [
        OutboundFrames(STREAM_SID).media("not*base64"),
        OutboundFrames(STREAM_SID).media("AAA"),
        _without(OutboundFrames(STREAM_SID).media(PAYLOAD), "streamSid"),
        _without(OutboundFrames(STREAM_SID).media(PAYLOAD), "media", "payload"),
        _with(OutboundFrames(STREAM_SID).media(PAYLOAD), 5, "media", "payload"),
        _without(OutboundFrames(STREAM_SID).mark("m"), "mark"),
        _with(OutboundFrames(STREAM_SID).mark("m"), 5, "mark", "name"),
        _with(OutboundFrames(STREAM_SID).clear, None, "streamSid"),
    ],
)
def test_broken_twilio_outbound_fails(text: str) -> None:
    """Outbound frames with bad base64, a missing field or a wrong type are rejected."""
    with pytest.raises(jsonschema.ValidationError):
        validate_twilio_outbound(text)


@pytest.mark.parametrize("event", ["start", "stop", "dtmf", "transfer"])
def test_unknown_twilio_outbound_event_fails(event: str) -> None:
    """Archer may only send media, mark and clear."""
    with pytest.raises(AssertionError, match="no message has event"):
        validate_twilio_outbound(json.dumps({"event": event, "streamSid": STREAM_SID}))


# ---- Twilio inbound: documented frames pass, broken ones fail --------------------------------

_CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
_START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": STREAM_SID,
    "start": {
        "streamSid": STREAM_SID,
        "accountSid": "AC123",
        "callSid": "CA123",
        "tracks": ["inbound"],
        "customParameters": {"call_sid": "CA123", "token": "t"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}
_MEDIA = {
    "event": "media",
    "sequenceNumber": "3",
    "streamSid": STREAM_SID,
    "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD},
}
_DTMF = {
    "event": "dtmf",
    "sequenceNumber": "5",
    "streamSid": STREAM_SID,
    "dtmf": {"track": "inbound_track", "digit": "1"},
}
_MARK = {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": "m"}}
_STOP = {
    "event": "stop",
    "sequenceNumber": "9",
    "streamSid": STREAM_SID,
    "stop": {"accountSid": "AC123", "callSid": "CA123"},
}


@pytest.mark.parametrize("frame", [_CONNECTED, _START, _MEDIA, _DTMF, _MARK, _STOP])
def test_documented_inbound_frames_pass(frame: dict[str, Any]) -> None:
    """Twilio's documented frames validate, including fields Archer never reads."""
    validate_twilio_inbound(json.dumps(frame))


def test_inbound_tolerates_fields_twilio_adds() -> None:
    """Inbound schemas are open: Twilio may add fields without notice."""
    validate_twilio_inbound(json.dumps({**_MEDIA, "newField": 1}))


@pytest.mark.parametrize(
    "text",
    [
        _without(json.dumps(_CONNECTED), "version"),
        _with(json.dumps(_START), 16000, "start", "mediaFormat", "sampleRate"),
        _with(json.dumps(_START), ["both"], "start", "tracks"),
        _with(json.dumps(_START), {"n": 1}, "start", "customParameters"),
        _without(json.dumps(_START), "start", "callSid"),
        _with(json.dumps(_MEDIA), "AB$=", "media", "payload"),
        _with(json.dumps(_MEDIA), 5, "media", "timestamp"),
        _without(json.dumps(_MEDIA), "sequenceNumber"),
        _with(json.dumps(_DTMF), "outbound_track", "dtmf", "track"),
        _without(json.dumps(_MARK), "mark", "name"),
        _without(json.dumps(_STOP), "stop"),
    ],
)
def test_broken_inbound_frames_fail(text: str) -> None:
    """Inbound frames with a missing, mistyped or out-of-range field are rejected."""
    with pytest.raises(jsonschema.ValidationError):
        validate_twilio_inbound(text)


def test_unknown_twilio_inbound_event_fails() -> None:
    """An event Twilio does not document fails with AssertionError."""
    with pytest.raises(AssertionError, match="no message has event"):
        validate_twilio_inbound('{"event":"clear","streamSid":"MZ1"}')
