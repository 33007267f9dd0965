"""Cartesia Managed Agents codec: builders, parsers and their error paths, both roles."""

from __future__ import annotations

import json

import pytest

from archer.cartesia import managed
from archer.cartesia.managed import (
    AudioInput,
    AudioOutput,
    AudioOutputClear,
    ClientToolCall,
    ClientToolResult,
    DtmfInput,
    DtmfOutput,
    Error,
    SessionCreate,
    SessionReady,
    TurnEnded,
    TurnOutputTextDelta,
    TurnStarted,
    Unknown,
    parse_client_event,
    parse_server_event,
)
from archer.errors import CartesiaProtocolError

PAYLOAD = "//79/Pv6+fj39vX08/Lx8A=="


# ---- client builders → parse_client_event (round trips) -----------------------------------


def test_session_create_round_trips() -> None:
    """session_create carries format, delivery and variables through the server parser."""
    text = managed.session_create(
        input_format="mulaw_8000",
        dynamic_variables={"caller_number": "+15551230000", "tier": 2, "vip": True, "score": 0.5},
        output_delivery="as_available",
    )
    assert parse_client_event(text) == SessionCreate(
        input_format="mulaw_8000",
        output_delivery="as_available",
        dynamic_variables={"caller_number": "+15551230000", "tier": 2, "vip": True, "score": 0.5},
    )


def test_session_create_is_compact_and_defaults_to_speaking_pace() -> None:
    """session_create is compact JSON, defaults to speaking_pace and omits empty variables."""
    text = managed.session_create(input_format="pcm_16000", dynamic_variables={})
    assert text == (
        '{"type":"session_create","audio":{"input_format":"pcm_16000",'
        '"output_delivery":"speaking_pace"}}'
    )


def test_session_create_rejects_local_misuse() -> None:
    """session_create raises ValueError for a bad format, delivery mode or variable."""
    with pytest.raises(ValueError, match="input_format"):
        managed.session_create(input_format="pcm_8000", dynamic_variables={})
    with pytest.raises(ValueError, match="output_delivery"):
        managed.session_create(
            input_format="mulaw_8000", dynamic_variables={}, output_delivery="fast"
        )
    with pytest.raises(ValueError, match="reserved prefix"):
        managed.session_create(input_format="mulaw_8000", dynamic_variables={"system__x": "1"})
    with pytest.raises(ValueError, match="not 1-64"):
        managed.session_create(input_format="mulaw_8000", dynamic_variables={"a-b": "1"})
    with pytest.raises(ValueError, match="Out of range float"):
        managed.session_create(input_format="mulaw_8000", dynamic_variables={"x": float("nan")})


def test_audio_input_is_built_by_concatenation_and_round_trips() -> None:
    """audio_input wraps the payload verbatim and parses back to AudioInput."""
    text = managed.audio_input(PAYLOAD)
    assert text == '{"type":"audio_input","audio":"' + PAYLOAD + '"}'
    assert json.loads(text) == {"type": "audio_input", "audio": PAYLOAD}
    assert parse_client_event(text) == AudioInput(audio=PAYLOAD)


@pytest.mark.parametrize("digit", [*"0123456789", "*", "#"])
def test_dtmf_input_round_trips_every_digit(digit: str) -> None:
    """dtmf_input accepts every DTMF key and parses back to DtmfInput."""
    assert parse_client_event(managed.dtmf_input(digit)) == DtmfInput(digit=digit)


@pytest.mark.parametrize("digit", ["", "A", "12", "w", '"'])
def test_dtmf_input_rejects_bad_digit(digit: str) -> None:
    """dtmf_input raises ValueError for anything but one DTMF key."""
    with pytest.raises(ValueError, match="DTMF"):
        managed.dtmf_input(digit)


def test_client_tool_result_round_trips_and_omits_absent_error_type() -> None:
    """client_tool_result round-trips and leaves error_type out when it is None."""
    text = managed.client_tool_result("call_1", 'balance "£12.50"', is_error=False)
    assert "error_type" not in json.loads(text)
    assert parse_client_event(text) == ClientToolResult(
        tool_call_id="call_1", result='balance "£12.50"', is_error=False, error_type=None
    )
    text = managed.client_tool_result("call_2", "db down", is_error=True, error_type="timeout")
    assert parse_client_event(text) == ClientToolResult(
        tool_call_id="call_2", result="db down", is_error=True, error_type="timeout"
    )


def test_client_tool_result_rejects_long_error_type() -> None:
    """client_tool_result raises ValueError for an error_type over 256 UTF-8 bytes."""
    with pytest.raises(ValueError, match="256"):
        managed.client_tool_result("c", "r", is_error=True, error_type="é" * 129)


# ---- server builders → parse_server_event (round trips) -----------------------------------


def test_session_ready_round_trips() -> None:
    """session_ready parses back to SessionReady with every field."""
    text = managed.session_ready(
        call_id="ac_1",
        agent_id="agent_1",
        agent_version_id="av_1",
        input_format="mulaw_8000",
        output_delivery="speaking_pace",
    )
    assert parse_server_event(text) == SessionReady(
        call_id="ac_1",
        agent_id="agent_1",
        agent_version_id="av_1",
        input_format="mulaw_8000",
        output_delivery="speaking_pace",
    )


def test_session_ready_tolerates_missing_optional_audio_fields() -> None:
    """session_ready with an empty audio object gives None formats (the schema allows it)."""
    text = '{"type":"session_ready","call_id":"a","agent_id":"b","agent_version_id":"c","audio":{}}'
    event = parse_server_event(text)
    assert isinstance(event, SessionReady)
    assert event.input_format is None
    assert event.output_delivery is None


def test_audio_output_round_trips() -> None:
    """audio_output wraps the payload verbatim and parses back to AudioOutput."""
    text = managed.audio_output(PAYLOAD)
    assert json.loads(text) == {"type": "audio_output", "audio": PAYLOAD}
    assert parse_server_event(text) == AudioOutput(audio=PAYLOAD)


def test_simple_server_events_round_trip() -> None:
    """audio_output_clear, dtmf_output, error and tool calls parse back to their events."""
    assert parse_server_event(managed.audio_output_clear()) == AudioOutputClear()
    assert parse_server_event(managed.dtmf_output("#")) == DtmfOutput(digit="#")
    assert parse_server_event(managed.error("agent_failed", "boom", fatal=True)) == Error(
        code="agent_failed", message="boom", fatal=True
    )
    text = managed.client_tool_call(
        "call_9", "get_balance", {"account": "chk", "n": 3}, expects_response=True
    )
    assert parse_server_event(text) == ClientToolCall(
        tool_call_id="call_9",
        tool_name="get_balance",
        parameters={"account": "chk", "n": 3},
        expects_response=True,
    )


def test_turn_events_round_trip() -> None:
    """turn_started, turn_output_text_delta and turn_ended parse back with numbers as floats."""
    assert parse_server_event(managed.turn_started(1, "assistant", 0)) == TurnStarted(
        turn=1, role="assistant", start_time=0.0
    )
    assert parse_server_event(managed.turn_output_text_delta(1, " Hello")) == (
        TurnOutputTextDelta(turn=1, role="assistant", text=" Hello")
    )
    calls = ({"name": "get_balance", "arguments": {"account": "chk"}, "id": "c1", "result": "5"},)
    text = managed.turn_ended(
        3, "user", "Hi.", interrupted=True, start_time=1.5, end_time=2, tool_calls=calls
    )
    event = parse_server_event(text)
    assert event == TurnEnded(
        turn=3,
        role="user",
        text="Hi.",
        interrupted=True,
        start_time=1.5,
        end_time=2.0,
        tool_calls=calls,
    )
    assert isinstance(event, TurnEnded)
    assert isinstance(event.end_time, float)


def test_turn_ended_defaults_to_no_tool_calls() -> None:
    """turn_ended always carries the required tool_calls list, empty by default."""
    text = managed.turn_ended(2, "assistant", "ok", interrupted=False, start_time=1, end_time=2)
    assert json.loads(text)["tool_calls"] == []


def test_server_builders_reject_local_misuse() -> None:
    """Server builders raise ValueError for a bad digit, role or error code."""
    with pytest.raises(ValueError, match="DTMF"):
        managed.dtmf_output("x")
    with pytest.raises(ValueError, match="role"):
        managed.turn_started(1, "system", 0.0)
    with pytest.raises(ValueError, match="role"):
        managed.turn_ended(1, "bot", "", interrupted=False, start_time=0, end_time=0)
    with pytest.raises(ValueError, match="error code"):
        managed.error("oops", "m", fatal=False)


# ---- parse_server_event error paths -------------------------------------------------------


def test_unknown_server_event_is_returned_not_raised() -> None:
    """An unknown event type comes back as Unknown carrying the type."""
    assert parse_server_event('{"type":"agent_thinking","x":1}') == Unknown(type="agent_thinking")


def test_unknown_fields_are_ignored() -> None:
    """Extra fields on a known server event are ignored."""
    text = '{"type":"audio_output","audio":"AA==","event_id":7}'
    assert parse_server_event(text) == AudioOutput(audio="AA==")


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b'{"type":"audio_output","audio":"AA=="}', "binary"),
        ("{not json", "not valid JSON"),
        ('{"type":"error","code":"x","message":"m","fatal":NaN}', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{}", "no type"),
        ('{"type":7}', "no type"),
        ('{"type":"audio_output"}', r"audio_output\.audio"),
        ('{"type":"audio_output","audio":5}', r"audio_output\.audio"),
        ('{"type":"dtmf_output","digit":"A"}', r"dtmf_output\.digit"),
        ('{"type":"dtmf_output"}', r"dtmf_output\.digit"),
        (
            '{"type":"client_tool_call","tool_call_id":"c","tool_name":"t","parameters":[],'
            '"expects_response":true}',
            "parameters",
        ),
        (
            '{"type":"client_tool_call","tool_call_id":"c","tool_name":"t","parameters":{},'
            '"expects_response":"yes"}',
            "expects_response",
        ),
        ('{"type":"turn_started","turn":true,"role":"user","start_time":0}', "turn"),
        ('{"type":"turn_started","turn":1.0,"role":"user","start_time":0}', "turn"),
        ('{"type":"turn_started","turn":1,"role":"system","start_time":0}', "role"),
        ('{"type":"error","code":"agent_failed","message":"m"}', "fatal"),
        ('{"type":"error","message":"m","fatal":true}', "code"),
    ],
)
def test_parse_server_event_rejects_bad_input(message: str | bytes, match: str) -> None:
    """Malformed server messages raise CartesiaProtocolError naming the problem."""
    with pytest.raises(CartesiaProtocolError, match=match):
        parse_server_event(message)


_ENDED = '"type":"turn_ended","turn":1,"role":"user","text":"x","start_time":0,"end_time":1'


@pytest.mark.parametrize(
    ("message", "ignored"),
    [
        ('{"type":"session_ready","call_id":"a","agent_id":"b","audio":{}}', []),
        ('{"type":"session_ready","call_id":"a","agent_id":"b","agent_version_id":"c"}', []),
        (
            '{"type":"session_ready","call_id":"a","agent_id":7,"audio":{"input_format":8000}}',
            ["session_ready.agent_id", "session_ready.audio.input_format"],
        ),
        ('{"type":"session_ready","call_id":"a","audio":[]}', ["session_ready.audio"]),
        (
            '{"type":"turn_started","turn":1,"role":"user","start_time":"0"}',
            ["turn_started.start_time"],
        ),
        (
            '{"type":"turn_started","turn":1,"role":"user","start_time":false}',
            ["turn_started.start_time"],
        ),
        (
            '{"type":"turn_started","turn":1,"role":"user","start_time":1e400}',
            ["turn_started.start_time"],
        ),
        ('{"type":"turn_output_text_delta","turn":1,"role":"assistant"}', []),
        ('{"type":"turn_output_text_delta","turn":1,"text":5}', ["turn_output_text_delta.text"]),
        ("{" + _ENDED + ',"interrupted":0,"tool_calls":[]}', ["turn_ended.interrupted"]),
        ("{" + _ENDED + ',"interrupted":false}', []),
        ("{" + _ENDED + ',"tool_calls":{}}', ["turn_ended.tool_calls"]),
        ("{" + _ENDED + ',"tool_calls":["x"]}', ["turn_ended.tool_calls[]"]),
        ("{" + _ENDED + ',"tool_calls":[{"name":"n"}]}', ["turn_ended.tool_calls[]"]),
        ("{" + _ENDED + ',"tool_calls":[{"arguments":{}}]}', ["turn_ended.tool_calls[]"]),
        ("{" + _ENDED + ',"tool_calls":[],"mood":"fine"}', ["turn_ended.mood"]),
        ('{"type":"error","code":"c","message":1,"fatal":false}', ["error.message"]),
    ],
)
def test_fields_archer_only_records_are_lenient_and_named(message: str, ignored: list[str]) -> None:
    """Mistyped or unknown fields Archer only records or logs read as absent; each is named."""
    seen: list[str] = []
    event = parse_server_event(message, seen)
    assert not isinstance(event, Unknown)
    assert seen == ignored


def test_lenient_fields_read_as_absent() -> None:
    """A dropped field takes its neutral value: no time, no text, not interrupted."""
    event = parse_server_event(
        "{" + _ENDED.replace('"text":"x"', '"text":1') + ',"interrupted":"no"}'
    )
    assert isinstance(event, TurnEnded)
    assert (event.text, event.interrupted, event.tool_calls) == ("", False, ())
    started = parse_server_event('{"type":"turn_started","turn":2,"role":"user","start_time":"x"}')
    assert isinstance(started, TurnStarted)
    assert started.start_time is None


def test_error_event_keeps_an_unlisted_code() -> None:
    """An error with a code the schema does not list still surfaces as Error."""
    event = parse_server_event('{"type":"error","code":"new_code","message":"m","fatal":false}')
    assert event == Error(code="new_code", message="m", fatal=False)


# ---- parse_client_event error paths (server role, strict like Cartesia) --------------------


def _session_create(**fields: object) -> str:
    message: dict[str, object] = {"type": "session_create", "audio": {"input_format": "mulaw_8000"}}
    message.update(fields)
    return json.dumps(message)


def test_session_create_defaults_output_delivery_and_variables() -> None:
    """A minimal session_create gets speaking_pace and no dynamic variables."""
    assert parse_client_event(_session_create()) == SessionCreate(
        input_format="mulaw_8000", output_delivery="speaking_pace", dynamic_variables={}
    )


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"{}", "binary"),
        ("nope", "not valid JSON"),
        ('"session_create"', "not a JSON object"),
        ('{"audio":"AA=="}', "no type"),
        ('{"type":"text_input","text":"hi"}', "unknown client event"),
        (_session_create(extra=1), "unknown field 'extra'"),
        (_session_create(audio={"input_format": "mulaw_8000", "rate": 1}), "unknown field 'rate'"),
        (_session_create(audio={}), "input_format"),
        (_session_create(audio={"input_format": "pcm_8000"}), "input_format"),
        (
            _session_create(audio={"input_format": "mulaw_8000", "output_delivery": "now"}),
            "output_delivery",
        ),
        ('{"type":"session_create"}', "audio"),
        (_session_create(dynamic_variables=[]), "dynamic_variables"),
        (_session_create(dynamic_variables={f"v{i}": i for i in range(65)}), "more than 64"),
        (_session_create(dynamic_variables={"": "x"}), "not 1-64"),
        (_session_create(dynamic_variables={"x" * 65: "x"}), "not 1-64"),
        (_session_create(dynamic_variables={"caller name": "x"}), "not 1-64"),
        (_session_create(dynamic_variables={"secret__pin": "1"}), "reserved prefix"),
        (_session_create(dynamic_variables={"system__now": "1"}), "reserved prefix"),
        (_session_create(dynamic_variables={"v": None}), "string, number or boolean"),
        (_session_create(dynamic_variables={"v": {"a": 1}}), "string, number or boolean"),
        (_session_create(dynamic_variables={"v": [1]}), "string, number or boolean"),
        ('{"type":"audio_input"}', r"audio_input\.audio"),
        ('{"type":"audio_input","audio":null}', r"audio_input\.audio"),
        ('{"type":"dtmf_input","digit":"10"}', r"dtmf_input\.digit"),
        ('{"type":"dtmf_input","digit":5}', r"dtmf_input\.digit"),
        ('{"type":"client_tool_result","result":"r"}', "tool_call_id"),
        ('{"type":"client_tool_result","tool_call_id":"c"}', "result"),
        (
            json.dumps({"type": "client_tool_result", "tool_call_id": "c" * 257, "result": "r"}),
            "256 characters",
        ),
        ('{"type":"client_tool_result","tool_call_id":"c","result":"r","is_error":1}', "is_error"),
        (
            '{"type":"client_tool_result","tool_call_id":"c","result":"r","error_type":1}',
            "error_type",
        ),
        (
            json.dumps(
                {
                    "type": "client_tool_result",
                    "tool_call_id": "c",
                    "result": "r",
                    "error_type": "x" * 257,
                }
            ),
            "256 UTF-8 bytes",
        ),
    ],
)
def test_parse_client_event_rejects_bad_input(message: str | bytes, match: str) -> None:
    """Client messages Cartesia would refuse raise CartesiaProtocolError naming the problem."""
    with pytest.raises(CartesiaProtocolError, match=match):
        parse_client_event(message)


def test_session_create_accepts_64_variables_with_64_char_names() -> None:
    """The variable limits are inclusive: 64 entries and 64-character names are accepted."""
    variables = {f"{i:064d}": i for i in range(64)}
    event = parse_client_event(_session_create(dynamic_variables=variables))
    assert isinstance(event, SessionCreate)
    assert event.dynamic_variables == variables


def test_client_tool_result_is_error_defaults_to_false() -> None:
    """A client_tool_result without is_error is a success result."""
    event = parse_client_event('{"type":"client_tool_result","tool_call_id":"c","result":"r"}')
    assert event == ClientToolResult(tool_call_id="c", result="r", is_error=False, error_type=None)


def test_audio_input_tolerates_extra_fields() -> None:
    """audio_input is not additionalProperties:false, so extra fields are ignored."""
    assert parse_client_event('{"type":"audio_input","audio":"AA==","seq":1}') == AudioInput(
        audio="AA=="
    )
