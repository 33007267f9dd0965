"""Cartesia Line codec: builders, parsers, the tool convention and their error paths, both roles."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archer.cartesia import line
from archer.cartesia.line import (
    Ack,
    Clear,
    Custom,
    Dtmf,
    Error,
    MediaInput,
    MediaOutput,
    Start,
    ToolRequest,
    TransferCall,
    Unknown,
    parse_client_event,
    parse_server_event,
    tool_request,
    tool_result_of,
)
from archer.errors import CartesiaProtocolError

PAYLOAD = "//79/Pv6+fj39vX08/Lx8A=="
SID = "call-123"


# ---- client builders → parse_client_event (round trips) -----------------------------------


def test_start_round_trips_with_every_field() -> None:
    """start carries id, format, voice, overrides and metadata through the server parser."""
    text = line.start(
        input_format="mulaw_8000",
        metadata={"from": "+15551230000", "to": "+15559870000"},
        stream_id=SID,
        voice_id="v1",
        introduction="Hi",
        system_prompt="Be brief",
    )
    assert parse_client_event(text) == Start(
        stream_id=SID,
        input_format="mulaw_8000",
        voice_id="v1",
        introduction="Hi",
        system_prompt="Be brief",
        metadata={"from": "+15551230000", "to": "+15559870000"},
    )


def test_start_minimal_is_compact_and_omits_optional_parts() -> None:
    """start without overrides has no stream_id, voice_id or agent, but always metadata."""
    text = line.start(input_format="pcm_16000", metadata={})
    assert text == '{"event":"start","config":{"input_format":"pcm_16000"},"metadata":{}}'
    assert parse_client_event(text) == Start(
        stream_id=None,
        input_format="pcm_16000",
        voice_id=None,
        introduction=None,
        system_prompt=None,
        metadata={},
    )


def test_start_sends_agent_with_only_the_given_override() -> None:
    """start's agent object holds only the overrides that were given."""
    message = json.loads(line.start(input_format="pcm_24000", metadata={}, system_prompt="P"))
    assert message["agent"] == {"system_prompt": "P"}


def test_start_rejects_local_misuse() -> None:
    """start raises ValueError for a bad format, an empty stream_id or non-string metadata."""
    with pytest.raises(ValueError, match="input_format"):
        line.start(input_format="mulaw_16000", metadata={})
    with pytest.raises(ValueError, match="stream_id"):
        line.start(input_format="mulaw_8000", metadata={}, stream_id="")
    with pytest.raises(ValueError, match="metadata"):
        line.start(input_format="mulaw_8000", metadata={"n": 1})  # type: ignore[dict-item]


def test_media_input_is_exact_and_round_trips() -> None:
    """media_input is the documented compact shape and parses back to MediaInput."""
    text = line.media_input(SID, PAYLOAD)
    assert text == (
        '{"event":"media_input","stream_id":"call-123","media":{"payload":"' + PAYLOAD + '"}}'
    )
    assert json.loads(text) == {
        "event": "media_input",
        "stream_id": SID,
        "media": {"payload": PAYLOAD},
    }
    assert parse_client_event(text) == MediaInput(stream_id=SID, payload=PAYLOAD)


def test_media_input_escapes_an_awkward_stream_id() -> None:
    """A stream_id with quotes, backslashes or a lone surrogate still yields valid ASCII JSON."""
    sid = 'a"b\\c\ud800é'
    text = line.media_input(sid, PAYLOAD)
    assert text.isascii()
    assert json.loads(text)["stream_id"] == sid


def test_dtmf_round_trips_both_roles() -> None:
    """dtmf has one shape and parses as Dtmf on both sides."""
    text = line.dtmf(SID, "#")
    assert text == '{"event":"dtmf","stream_id":"call-123","dtmf":"#"}'
    assert parse_client_event(text) == Dtmf(digit="#")
    assert parse_server_event(text) == Dtmf(digit="#")


@pytest.mark.parametrize("digit", ["", "a", "12", "5 "])
def test_dtmf_rejects_a_non_digit(digit: str) -> None:
    """dtmf raises ValueError for anything but one of 0-9, *, #."""
    with pytest.raises(ValueError, match="DTMF"):
        line.dtmf(SID, digit)


def test_custom_round_trips_both_roles() -> None:
    """custom carries nested metadata through both parsers."""
    metadata = {"user_id": "u1", "n": [1, 2.5, None, True], "nested": {"k": "ü"}}
    text = line.custom(SID, metadata)
    assert parse_client_event(text) == Custom(metadata=metadata)
    assert parse_server_event(text) == Custom(metadata=metadata)


def test_custom_rejects_metadata_json_cannot_carry() -> None:
    """custom raises ValueError for NaN or an unserialisable value."""
    with pytest.raises(ValueError, match="JSON"):
        line.custom(SID, {"x": float("nan")})
    with pytest.raises(ValueError, match="not JSON"):
        line.custom(SID, {"x": {1, 2}})


# ---- server builders → parse_server_event (round trips) -----------------------------------


def test_ack_round_trips_and_carries_agent() -> None:
    """ack parses back to Ack with its config; agent is written only when given."""
    text = line.ack(SID, {"input_format": "mulaw_8000"}, {"introduction": "Hi"})
    assert json.loads(text)["agent"] == {"introduction": "Hi"}
    assert parse_server_event(text) == Ack(stream_id=SID, config={"input_format": "mulaw_8000"})
    assert "agent" not in json.loads(line.ack(SID, {}))


def test_ack_tolerates_missing_stream_id_and_config() -> None:
    """An ack without stream_id or config still parses (empty id, empty config)."""
    assert parse_server_event('{"event":"ack"}') == Ack(stream_id="", config={})


def test_media_output_is_exact_and_round_trips() -> None:
    """media_output is compact and parses back to MediaOutput."""
    text = line.media_output(SID, PAYLOAD)
    assert json.loads(text) == {
        "event": "media_output",
        "stream_id": SID,
        "media": {"payload": PAYLOAD},
    }
    assert parse_server_event(text) == MediaOutput(payload=PAYLOAD)


def test_clear_round_trips() -> None:
    """clear is compact and parses back to Clear."""
    text = line.clear(SID)
    assert text == '{"event":"clear","stream_id":"call-123"}'
    assert parse_server_event(text) == Clear()


@pytest.mark.parametrize(
    ("message", "target"),
    [
        # The Calls API reference's shape.
        ({"transfer": {"target_phone_number": "+14155550100"}}, "+14155550100"),
        # A flat shape some agents send.
        ({"target_phone_number": "+14155550100"}, "+14155550100"),
        # The Line SDK's wire model (cartesia-line 0.2.19, TransferOutput), at the top level...
        ({"transfer_destination": {"type": "phone", "value": "+14155550100"}}, "+14155550100"),
        ({"transfer_destination": {"type": "sip_uri", "value": "sip:desk@pbx.example.com"}}, None),
        # ...or inside transfer.
        (
            {"transfer": {"transfer_destination": {"type": "sip_uri", "value": "sips:a@b.c"}}},
            "sips:a@b.c",
        ),
    ],
)
def test_transfer_call_in_every_shape_agents_send(
    message: dict[str, object], target: str | None
) -> None:
    """The three shapes of transfer_call name the same kind of target."""
    text = json.dumps({"event": "transfer_call", "stream_id": SID, **message})
    expected = target or "sip:desk@pbx.example.com"
    assert parse_server_event(text) == TransferCall(target=expected)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({}, "names no target"),
        ({"transfer": "x"}, "names no target"),
        ({"transfer": {"target_phone_number": ""}}, "E.164"),
        ({"transfer": {"target_phone_number": 5}}, "E.164"),
        ({"target_phone_number": "5551234"}, "E.164"),
        ({"transfer_destination": "x"}, "not an object"),
        ({"transfer_destination": {"type": "fax", "value": "+14155550100"}}, "'fax' is unknown"),
        ({"transfer_destination": {"type": "phone", "value": "sip:a@b"}}, "valid phone"),
        ({"transfer_destination": {"type": "sip_uri", "value": "+14155550100"}}, "valid sip_uri"),
        ({"transfer_destination": {"type": "sip_uri", "value": "sip:<script>"}}, "valid sip_uri"),
    ],
)
def test_an_unusable_transfer_target_parses_with_its_problem(
    message: dict[str, object], problem: str
) -> None:
    """A bad or missing target is not a protocol error: the caller still reaches a person."""
    event = parse_server_event(json.dumps({"event": "transfer_call", **message}))
    assert isinstance(event, TransferCall)
    assert event.target is None
    assert event.problem is not None
    assert problem in event.problem


def test_server_events_need_no_stream_id() -> None:
    """Every server event parses without a stream_id."""
    assert parse_server_event('{"event":"clear"}') == Clear()
    assert parse_server_event('{"event":"media_output","media":{"payload":"AA=="}}') == (
        MediaOutput(payload="AA==")
    )
    assert parse_server_event('{"event":"dtmf","dtmf":"1"}') == Dtmf(digit="1")
    assert parse_server_event('{"event":"custom","metadata":{}}') == Custom(metadata={})


def test_unknown_server_event_is_returned() -> None:
    """An unknown event comes back as Unknown, extra fields ignored."""
    assert parse_server_event('{"event":"turn_started","turn":1}') == Unknown(event="turn_started")
    assert parse_server_event('{"type":"novel"}') == Unknown(event="novel")


# ---- errors -------------------------------------------------------------------------------


def test_error_third_party_shape() -> None:
    """The generic Cartesia error object keyed by type parses with error_code as the code."""
    text = json.dumps(
        {
            "type": "error",
            "status_code": 400,
            "error_code": "bad_request",
            "title": "Bad",
            "message": "nope",
        }
    )
    assert parse_server_event(text) == Error(message="nope", code="bad_request")


def test_error_falls_back_to_status_code_and_title() -> None:
    """Without error_code the status code is the code; without message the title is."""
    assert parse_server_event('{"event":"error","status_code":500,"title":"T"}') == Error(
        message="T", code="500"
    )
    assert parse_server_event('{"type":"error","status_code":"429"}') == Error(
        message="", code="429"
    )


@pytest.mark.parametrize(
    ("text", "ignored"),
    [
        ('{"type":"error","message":3}', "error.message"),
        ('{"type":"error","title":[]}', "error.title"),
        ('{"type":"error","error_code":1}', "error.error_code"),
        ('{"type":"error","status_code":true}', "error.status_code"),
        ('{"type":"error","status_code":1.5}', "error.status_code"),
        ('{"type":"error","status_code":10000000000}', "error.status_code"),
        ('{"event":"ack","config":[]}', "ack.config"),
    ],
)
def test_mistyped_fields_archer_only_logs_are_ignored_and_named(text: str, ignored: str) -> None:
    """An error's text and the ack's config are only logged: a mistyped one is dropped, named."""
    seen: list[str] = []
    event = parse_server_event(text, seen)
    assert isinstance(event, Error | Ack)
    assert seen == [ignored]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"event":"media_output"}', "media_output.media"),
        ('{"event":"media_output","media":{"payload":1}}', "payload"),
        ('{"event":"media_output","media":[]}', "media_output.media"),
        ('{"event":"ack","stream_id":7}', "ack.stream_id"),
        ('{"event":"dtmf","dtmf":"x"}', "DTMF"),
        ('{"event":"dtmf"}', "dtmf.dtmf"),
        ('{"event":"custom"}', "custom.metadata"),
        ('{"event":"custom","metadata":"x"}', "custom.metadata"),
        ('{"stream_id":"s"}', "no event"),
        ('{"event":5}', "no event"),
        ("[]", "not a JSON object"),
        ("not json", "not valid JSON"),
        ('{"event":"clear","x":NaN}', "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_server_parser_error_paths(text: str, match: str) -> None:
    """Each malformed server message raises CartesiaProtocolError naming the problem."""
    with pytest.raises(CartesiaProtocolError, match=match):
        parse_server_event(text)


@pytest.mark.parametrize("message", [b'{"event":"clear"}', None])
def test_non_text_frames_are_refused(message: bytes | None) -> None:
    """A binary frame (or nothing) is refused by both parsers."""
    with pytest.raises(CartesiaProtocolError, match="binary frame"):
        parse_server_event(message)
    with pytest.raises(CartesiaProtocolError, match="binary frame"):
        parse_client_event(message)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"event":"start"}', "start.config"),
        ('{"event":"start","config":{}}', "input_format"),
        ('{"event":"start","config":{"input_format":"mp3"}}', "not one of"),
        ('{"event":"start","stream_id":"","config":{"input_format":"mulaw_8000"}}', "empty"),
        ('{"event":"start","stream_id":1,"config":{"input_format":"mulaw_8000"}}', "stream_id"),
        ('{"event":"start","config":{"input_format":"mulaw_8000","voice_id":1}}', "voice_id"),
        ('{"event":"start","config":{"input_format":"mulaw_8000"},"agent":1}', "start.agent"),
        (
            '{"event":"start","config":{"input_format":"mulaw_8000"},"agent":{"introduction":1}}',
            "introduction",
        ),
        ('{"event":"start","config":{"input_format":"mulaw_8000"},"metadata":[]}', "metadata"),
        ('{"event":"media_input","media":{"payload":"!!"}}', "not base64"),
        ('{"event":"media_input","media":{"payload":"AAA"}}', "not base64"),
        ('{"event":"media_input","media":{"payload":"ÄÄÄÄ"}}', "not base64"),
        ('{"event":"media_input","media":{}}', "payload"),
        ('{"event":"media_input"}', "media_input.media"),
        ('{"event":"media_input","stream_id":2,"media":{"payload":"AA=="}}', "stream_id"),
        ('{"event":"dtmf","dtmf":"55"}', "DTMF"),
        ('{"event":"dtmf","stream_id":[],"dtmf":"5"}', "stream_id"),
        ('{"event":"custom","metadata":null}', "metadata"),
        ('{"event":"custom","stream_id":1,"metadata":{}}', "stream_id"),
        ('{"event":"ping"}', "unknown client event"),
        ('{"type":"start"}', "no event"),
        ("3", "not a JSON object"),
    ],
)
def test_client_parser_error_paths(text: str, match: str) -> None:
    """Each malformed client message raises CartesiaProtocolError naming the problem."""
    with pytest.raises(CartesiaProtocolError, match=match):
        parse_client_event(text)


def test_client_parser_tolerates_missing_stream_id() -> None:
    """media_input without stream_id parses (a third-party harness sends it that way)."""
    assert parse_client_event('{"event":"media_input","media":{"payload":"AA=="}}') == (
        MediaInput(stream_id=None, payload="AA==")
    )


def test_close_reason_constants() -> None:
    """The close reasons match the documented text."""
    assert line.CALL_ENDED_BY_AGENT == "call ended by agent"
    assert line.IDLE_TIMEOUT == "connection idle timeout"
    assert line.INPUT_FORMATS == ("mulaw_8000", "pcm_16000", "pcm_24000", "pcm_44100")


# ---- Archer's tool convention -------------------------------------------------------------


def test_tool_call_round_trips_to_tool_request() -> None:
    """An emulator's tool_call reaches Archer as a ToolRequest."""
    text = line.tool_call(SID, "t-1", "lookup_order", {"order_id": "42"})
    event = parse_server_event(text)
    assert isinstance(event, Custom)
    assert event.metadata == {
        "archer_tool": "lookup_order",
        "id": "t-1",
        "arguments": {"order_id": "42"},
    }
    assert tool_request(event.metadata) == ToolRequest(
        tool_call_id="t-1", name="lookup_order", arguments={"order_id": "42"}
    )


def test_tool_result_round_trips_to_tool_result_of() -> None:
    """Archer's tool_result reaches the emulator as (id, result, is_error)."""
    text = line.tool_result(SID, "t-1", '{"ok":true}', is_error=False)
    event = parse_client_event(text)
    assert isinstance(event, Custom)
    assert event.metadata == {
        "archer_tool_result": "t-1",
        "result": '{"ok":true}',
        "is_error": False,
    }
    assert tool_result_of(event.metadata) == ("t-1", '{"ok":true}', False)
    failed = parse_client_event(line.tool_result(SID, "t-2", "boom", is_error=True))
    assert isinstance(failed, Custom)
    assert tool_result_of(failed.metadata) == ("t-2", "boom", True)


def test_plain_custom_metadata_is_not_a_tool_message() -> None:
    """Metadata without the convention's keys is neither a request nor a result."""
    assert tool_request({"agent_state": "thinking"}) is None
    assert tool_result_of({"agent_state": "thinking"}) is None
    assert tool_request({"archer_tool_result": "x"}) is None
    assert tool_result_of({"archer_tool": "x"}) is None


def test_tool_request_arguments_default_to_empty() -> None:
    """A tool request without arguments gets an empty mapping."""
    assert tool_request({"archer_tool": "hang_up", "id": "1"}) == ToolRequest(
        tool_call_id="1", name="hang_up", arguments={}
    )


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"archer_tool": None, "id": "1"}, "archer_tool"),
        ({"archer_tool": "", "id": "1"}, "archer_tool"),
        ({"archer_tool": "x" * 65, "id": "1"}, "archer_tool"),
        ({"archer_tool": "t"}, r"\.id"),
        ({"archer_tool": "t", "id": ""}, r"\.id"),
        ({"archer_tool": "t", "id": 5}, r"\.id"),
        ({"archer_tool": "t", "id": "i" * 257}, r"\.id"),
        ({"archer_tool": "t", "id": "1", "arguments": []}, "arguments"),
        ({"archer_tool": "t", "id": "1", "arguments": None}, "arguments"),
    ],
)
def test_malformed_tool_request_is_a_protocol_error(
    metadata: dict[str, object], match: str
) -> None:
    """A tool request with a bad name, id or arguments raises CartesiaProtocolError."""
    with pytest.raises(CartesiaProtocolError, match=match):
        tool_request(metadata)


def test_tool_request_limits_are_inclusive() -> None:
    """A 64-character name and a 256-character id are accepted."""
    request = tool_request({"archer_tool": "n" * 64, "id": "i" * 256})
    assert request is not None
    assert (len(request.name), len(request.tool_call_id)) == (64, 256)


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"archer_tool_result": "", "result": "r", "is_error": False}, "archer_tool_result"),
        ({"archer_tool_result": 1, "result": "r", "is_error": False}, "archer_tool_result"),
        ({"archer_tool_result": "i" * 257, "result": "r", "is_error": False}, "over 256"),
        ({"archer_tool_result": "1", "is_error": False}, "result"),
        ({"archer_tool_result": "1", "result": {}, "is_error": False}, "result"),
        ({"archer_tool_result": "1", "result": "r"}, "is_error"),
        ({"archer_tool_result": "1", "result": "r", "is_error": 0}, "is_error"),
    ],
)
def test_malformed_tool_result_is_a_protocol_error(metadata: dict[str, object], match: str) -> None:
    """A tool result with a bad id, result or is_error raises CartesiaProtocolError."""
    with pytest.raises(CartesiaProtocolError, match=match):
        tool_result_of(metadata)


def test_tool_builders_reject_local_misuse() -> None:
    """tool_call and tool_result raise ValueError for empty or overlong names and ids."""
    with pytest.raises(ValueError, match="name"):
        line.tool_call(SID, "1", "", {})
    with pytest.raises(ValueError, match="name"):
        line.tool_call(SID, "1", "n" * 65, {})
    with pytest.raises(ValueError, match="tool_call_id"):
        line.tool_call(SID, "", "n", {})
    with pytest.raises(ValueError, match="tool_call_id"):
        line.tool_result(SID, "i" * 257, "r", is_error=False)
    with pytest.raises(ValueError, match="not JSON"):
        line.tool_call(SID, "1", "n", {"x": object()})


# ---- hostile input ------------------------------------------------------------------------

BUDGET = settings(max_examples=100, deadline=None, derandomize=True, database=None)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "event",
        "type",
        "stream_id",
        "media",
        "payload",
        "config",
        "input_format",
        "agent",
        "metadata",
        "dtmf",
        "transfer",
        "target_phone_number",
        "transfer_destination",
        "value",
        "status_code",
        "error_code",
        "message",
        "title",
        "archer_tool",
        "archer_tool_result",
        "id",
        "arguments",
        "result",
        "is_error",
    ]
)
events = st.sampled_from(
    [
        "start",
        "media_input",
        "media_output",
        "ack",
        "clear",
        "dtmf",
        "custom",
        "transfer_call",
        "error",
        "x",
    ]
)
shaped = st.fixed_dictionaries({"event": events}, optional={"type": events}) | st.dictionaries(
    keys, json_values, max_size=6
)


def _check_all(text: str) -> None:
    for parse in (parse_server_event, parse_client_event):
        try:
            event = parse(text)
        except CartesiaProtocolError:
            continue
        if isinstance(event, Custom):
            for convention in (tool_request, tool_result_of):
                with contextlib.suppress(CartesiaProtocolError):
                    convention(event.metadata)


@BUDGET
@given(message=st.text(st.characters(exclude_categories=())))
def test_arbitrary_text_is_an_event_or_a_protocol_error(message: str) -> None:
    """Any text, lone surrogates included, parses or raises CartesiaProtocolError."""
    _check_all(message)


@BUDGET
@given(value=json_values)
def test_arbitrary_json_is_an_event_or_a_protocol_error(value: object) -> None:
    """Any JSON value (NaN included) parses or raises CartesiaProtocolError."""
    _check_all(json.dumps(value))


@BUDGET
@given(base=shaped, extra=st.dictionaries(keys, json_values, max_size=6))
def test_protocol_shaped_objects_are_an_event_or_a_protocol_error(
    base: dict[str, object], extra: dict[str, object]
) -> None:
    """Objects built from the protocol's own names parse or raise CartesiaProtocolError."""
    message = {**extra, **base}
    _check_all(json.dumps(message))
    for nested in ("media", "config", "agent", "transfer", "transfer_destination", "metadata"):
        _check_all(json.dumps({**message, nested: extra}))
