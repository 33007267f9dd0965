"""Hostile input for the wire parsers: an event, or exactly their protocol error, never more.

``parse_frame`` may only raise ``TwilioProtocolError``, and the Twilio emulator's reader of what
a server sends (``read_server_message``) only ``ServerMessageError``;
``parse_server_event`` and ``parse_client_event`` may only raise ``CartesiaProtocolError``, and
the Cartesia emulators' readers of what a client sends (``read_managed_message``,
``read_line_message``) only ``ClientMessageError``. A
``KeyError``, ``TypeError``, ``RecursionError`` or ``ValueError`` escaping one of them would end
a live call as ``internal_error`` instead of skipping a frame, so hypothesis feeds them arbitrary
text and bytes, arbitrary JSON, protocol-shaped objects, valid messages with one field broken
and deeply nested JSON. Valid messages built with the repo's builders must parse back as built.

The budget is fixed and derandomized (``BUDGET``) so CI runs the same examples every time. The
three inputs found while writing this suite that escaped as the wrong exception (superscript
digits, a 400-digit number, a lone surrogate) are pinned by regression tests at the end.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Hashable
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archer.cartesia import managed
from archer.cartesia.managed import ClientEvent, ServerEvent, parse_client_event, parse_server_event
from archer.emulators.cartesia.client_messages import ClientMessageError
from archer.emulators.cartesia.line_messages import (
    Custom,
    LineClientEvent,
    read_line_message,
    tool_result_of,
)
from archer.emulators.cartesia.managed_messages import ManagedClientEvent, read_managed_message
from archer.emulators.twilio.server_messages import (
    ServerClear,
    ServerMark,
    ServerMedia,
    ServerMessage,
    ServerMessageError,
    read_server_message,
)
from archer.errors import CartesiaProtocolError, ProtocolError, TwilioProtocolError
from archer.twilio.frames import (
    Dtmf,
    Mark,
    Media,
    OutboundFrames,
    Start,
    Stop,
    TwilioFrame,
    parse_frame,
)

BUDGET: Final = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SID: Final = "MZ" + "ab" * 16
PAYLOAD: Final = base64.b64encode(bytes(range(160))).decode()
MEGABYTE: Final = 1024 * 1024


def _read_server_message(message: str | bytes) -> object:
    return read_server_message(message, stream_sid=SID)


def _read_line_message(message: str | bytes) -> object:
    # A custom event's metadata is read again by the Line agent when it answers a tool call.
    event = read_line_message(message)
    if isinstance(event, Custom):
        tool_result_of(event.metadata)
    return event


#: Each parser with the one exception it may raise and the union of what it may return.
PARSERS: Final = {
    "parse_frame": (parse_frame, TwilioProtocolError, TwilioFrame),
    "read_server_message": (_read_server_message, ServerMessageError, ServerMessage),
    "parse_server_event": (parse_server_event, CartesiaProtocolError, ServerEvent),
    "parse_client_event": (parse_client_event, CartesiaProtocolError, ClientEvent),
    "read_managed_message": (read_managed_message, ClientMessageError, ManagedClientEvent),
    "read_line_message": (_read_line_message, ClientMessageError, LineClientEvent),
}


def check(parser: str, message: str | bytes) -> object | None:
    """Run ``parser``: its event (of its union), or None when it raised its protocol error."""
    parse, error, union = PARSERS[parser]
    try:
        event = parse(message)
    except error as exc:
        problem = str(exc)
    else:
        assert isinstance(event, union), event
        return event
    assert problem, "a protocol error names what is wrong"
    return None
    return event


# --- strategies -------------------------------------------------------------------------------

#: Any text, lone surrogates included (a JSON ``\ud800`` escape decodes to one).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=25,
)
#: Every name the protocols use, so generated objects reach past the first branch.
VOCABULARY: Final = (
    "event",
    "type",
    "streamSid",
    "sequenceNumber",
    "protocol",
    "version",
    "start",
    "media",
    "mark",
    "dtmf",
    "stop",
    "clear",
    "connected",
    "payload",
    "timestamp",
    "chunk",
    "track",
    "name",
    "digit",
    "callSid",
    "accountSid",
    "tracks",
    "customParameters",
    "mediaFormat",
    "encoding",
    "sampleRate",
    "channels",
    "audio",
    "turn",
    "role",
    "text",
    "interrupted",
    "start_time",
    "end_time",
    "tool_calls",
    "tool_call_id",
    "tool_name",
    "parameters",
    "expects_response",
    "code",
    "message",
    "fatal",
    "call_id",
    "agent_id",
    "agent_version_id",
    "input_format",
    "output_delivery",
    "dynamic_variables",
    "result",
    "is_error",
    "error_type",
    "arguments",
    "id",
    "stream_id",
    "config",
    "voice_id",
    "agent",
    "introduction",
    "system_prompt",
    "metadata",
)
EVENT_NAMES: Final = (
    "connected",
    "start",
    "media",
    "mark",
    "dtmf",
    "stop",
    "clear",
    "session_create",
    "session_ready",
    "audio_input",
    "audio_output",
    "audio_output_clear",
    "dtmf_input",
    "dtmf_output",
    "client_tool_call",
    "client_tool_result",
    "turn_started",
    "turn_output_text_delta",
    "turn_ended",
    "error",
    "media_input",
    "custom",
    "made_up_event",
)
vocabulary_keys = st.sampled_from(VOCABULARY) | any_text
#: Values a field may hold on the wire, right or wrong: protocol words weigh as much as noise.
protocol_values = st.recursive(
    json_scalars
    | st.sampled_from(EVENT_NAMES)
    | st.sampled_from(("user", "assistant", "mulaw_8000", "speaking_pace", "5", "#", SID))
    | st.just(PAYLOAD),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(vocabulary_keys, children, max_size=6)
    ),
    max_leaves=30,
)


@st.composite
def protocol_shaped(draw: st.DrawFn) -> dict[str, object]:
    """An object named like a real message (``event`` and ``type``) with arbitrary fields."""
    obj: dict[str, object] = draw(st.dictionaries(vocabulary_keys, protocol_values, max_size=6))
    name = draw(st.sampled_from(EVENT_NAMES))
    obj[draw(st.sampled_from(("event", "type")))] = name
    if draw(st.booleans()):
        # The nested body Twilio uses: {"event": "media", "media": {...}}.
        obj[name] = draw(st.dictionaries(vocabulary_keys, protocol_values, max_size=6))
    return obj


def _dumps(value: object) -> str:
    # NaN and Infinity are written as such: they are not JSON, and the parsers must cope.
    return json.dumps(value, allow_nan=True)


# --- arbitrary input: text, bytes, JSON ------------------------------------------------------

parsers = pytest.mark.parametrize("parser", sorted(PARSERS))


@parsers
@BUDGET
@given(message=st.text(st.characters(exclude_categories=())))
def test_arbitrary_text_is_an_event_or_a_protocol_error(parser: str, message: str) -> None:
    """Any text at all, lone surrogates included, parses or raises the parser's protocol error."""
    check(parser, message)


@parsers
@BUDGET
@given(message=st.binary())
def test_binary_frames_are_always_refused(parser: str, message: bytes) -> None:
    """A binary frame is never a message on these text protocols, whatever it holds."""
    parse, error, _ = PARSERS[parser]
    with pytest.raises(error, match="binary frame"):
        parse(message)


@parsers
@BUDGET
@given(value=json_values)
def test_arbitrary_json_is_an_event_or_a_protocol_error(parser: str, value: object) -> None:
    """Any JSON value (NaN, huge integers and non-objects included) is handled."""
    check(parser, _dumps(value))


@parsers
@BUDGET
@given(obj=protocol_shaped())
def test_protocol_shaped_objects_are_an_event_or_a_protocol_error(
    parser: str, obj: dict[str, object]
) -> None:
    """Objects with a real event name and arbitrary, often misnamed or mistyped, fields."""
    check(parser, _dumps(obj))


# --- valid messages with one field broken -----------------------------------------------------


def _twilio_inbound() -> list[dict[str, Any]]:
    """One of each message Twilio sends, shaped as the reference shows them."""
    return [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": SID,
                "accountSid": "AC" + "0" * 32,
                "callSid": "CA" + "1" * 32,
                "tracks": ["inbound"],
                "customParameters": {"token": "abc"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": SID,
        },
        {
            "event": "media",
            "sequenceNumber": "3",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD},
            "streamSid": SID,
        },
        {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "5"}},
        {"event": "mark", "streamSid": SID, "mark": {"name": "turn-1"}},
        {"event": "stop", "streamSid": SID, "stop": {"accountSid": "AC0", "callSid": "CA1"}},
    ]


def _twilio_outbound() -> list[dict[str, Any]]:
    return [json.loads(text) for text in (OUTBOUND.media(PAYLOAD), OUTBOUND.mark("m1"))] + [
        json.loads(OUTBOUND.clear)
    ]


def _cartesia_server() -> list[dict[str, Any]]:
    return [
        json.loads(text)
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
            managed.dtmf_output("7"),
            managed.client_tool_call(
                "call_1", "get_balance", {"account": {"type": "checking"}}, expects_response=True
            ),
            managed.turn_started(1, "assistant", 0.5),
            managed.turn_output_text_delta(1, "Hello "),
            managed.turn_ended(
                1,
                "assistant",
                "Hello there",
                interrupted=False,
                start_time=0.5,
                end_time=1.5,
                tool_calls=[{"id": "call_1", "name": "get_balance", "arguments": {}}],
            ),
            managed.error("invalid_event", "bad", fatal=False),
        )
    ]


def _cartesia_client() -> list[dict[str, Any]]:
    return [
        json.loads(text)
        for text in (
            managed.session_create(
                input_format="mulaw_8000", dynamic_variables={"call_sid": "CA1", "tier": 2}
            ),
            managed.audio_input(PAYLOAD),
            managed.dtmf_input("#"),
            managed.client_tool_result("call_1", "{}", is_error=True, error_type="timeout"),
        )
    ]


def _line_client() -> list[dict[str, Any]]:
    """One of each message a Line client sends, shaped as the reference shows them (§2.A)."""
    return [
        {
            "event": "start",
            "stream_id": "call-123",
            "config": {"input_format": "mulaw_8000", "voice_id": "v-1"},
            "agent": {"introduction": "Hi", "system_prompt": "You are ..."},
            "metadata": {"from": "+15551230000", "crm_id": "42"},
        },
        {"event": "media_input", "stream_id": "call-123", "media": {"payload": PAYLOAD}},
        {"event": "dtmf", "stream_id": "call-123", "dtmf": "5"},
        {
            "event": "custom",
            "stream_id": "call-123",
            "metadata": {"archer_tool_result": "call_1", "result": "{}", "is_error": False},
        },
    ]


OUTBOUND: Final = OutboundFrames(SID)
VALID: Final = {
    "parse_frame": _twilio_inbound,
    "read_server_message": _twilio_outbound,
    "parse_server_event": _cartesia_server,
    "parse_client_event": _cartesia_client,
    "read_managed_message": _cartesia_client,
    "read_line_message": _line_client,
}


def test_the_templates_are_valid() -> None:
    """Every template the mutation tests start from parses as it is."""
    for parser, templates in VALID.items():
        for template in templates():
            assert check(parser, json.dumps(template)) is not None, (parser, template)


_REMOVE: Final = object()
_ADD_FIELD: Final = object()
HUGE_STRINGS: Final = (
    "A" * MEGABYTE,  # valid base64, 768 KiB of audio
    "é" * (MEGABYTE // 2),
    "9" * MEGABYTE,
    "\x00" * MEGABYTE,
    '"\\' * (MEGABYTE // 2),
)
BAD_BASE64: Final = ("!!!!", "AAA", "A===", "====", "AAAA=", "AA AA", "AA\nAA", "é", "AAAA====")
ODD_VALUES: Final[tuple[object, ...]] = (
    "",
    " ",
    "-1",
    "1.5",
    "0x10",
    "1e3",
    "12345678901234",
    "١٢٣",  # Arabic-Indic digits: isdecimal, int() takes them
    "Ⅻ",
    "²",  # isdigit() but not isdecimal(): bug 1
    "\ud800",
    "\u202e",
    "null",
    -1,
    0,
    2**63,
    10**30,
    10**400,
    1e308,
    -0.0,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    [],
    {},
    [None],
    {"": None},
)
mutations = (
    st.just(_REMOVE)
    | st.just(_ADD_FIELD)
    | json_values
    | st.sampled_from(HUGE_STRINGS)
    | st.sampled_from(BAD_BASE64)
    | st.sampled_from(ODD_VALUES)
    | any_text
)


def _paths(value: object, prefix: tuple[Hashable, ...] = ()) -> list[tuple[Hashable, ...]]:
    """The path to every field and list item inside ``value``, at any depth."""
    paths: list[tuple[Hashable, ...]] = []
    items: list[tuple[Hashable, object]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, child in items:
        paths.append((*prefix, key))
        paths.extend(_paths(child, (*prefix, key)))
    return paths


def _mutate(message: dict[str, Any], path: tuple[Hashable, ...], mutation: object) -> None:
    parent: Any = message
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if mutation is _REMOVE:
        del parent[last]
    elif mutation is _ADD_FIELD:
        target = parent[last]
        if isinstance(target, dict):
            target["unexpected"] = "field"
        elif isinstance(target, list):
            target.append("unexpected")
        else:
            parent[last] = [target]
    else:
        parent[last] = mutation


@st.composite
def mutated(draw: st.DrawFn, parser: str) -> str:
    """A valid message of ``parser``'s protocol with one field broken (or removed)."""
    message = draw(st.sampled_from(VALID[parser]()))
    path = draw(st.sampled_from(_paths(message)))
    _mutate(message, path, draw(mutations))
    return _dumps(message)


@parsers
@BUDGET
@given(data=st.data())
def test_valid_messages_with_one_field_broken(parser: str, data: st.DataObject) -> None:
    """A field removed, mistyped, 1 MB long, bad base64 or odd unicode: never a crash."""
    check(parser, data.draw(mutated(parser)))


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("depth", [1_000, 10_000, 200_000])
@pytest.mark.parametrize("shape", ["array", "object", "in a field"])
def test_deeply_nested_json_is_refused_or_parsed(parser: str, depth: int, shape: str) -> None:
    """Nesting deep enough to blow the JSON decoder's stack is a protocol error, not a crash."""
    if shape == "array":
        message = "[" * depth + "]" * depth
    elif shape == "object":
        message = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = "[" * depth + "]" * depth
        message = (
            '{"event":"media","type":"client_tool_call","tool_call_id":"c","tool_name":"t",'
            '"expects_response":true,"parameters":{"a":' + nested + "},"
            '"media":{"payload":' + nested + "}}"
        )
    parse, error, _ = PARSERS[parser]
    if depth > 1_000:
        with pytest.raises(error):
            parse(message)
    else:
        check(parser, message)


@parsers
@BUDGET
@given(depth=st.integers(min_value=1, max_value=5_000), leaf=json_scalars)
def test_nesting_at_any_depth_is_an_event_or_a_protocol_error(
    parser: str, depth: int, leaf: object
) -> None:
    """Mixed nesting of lists and objects around any scalar, down to thousands of levels."""
    message = _dumps(leaf)
    for level in range(depth):
        message = f'{{"k{level % 3}":{message}}}' if level % 2 else f"[{message}]"
    check(parser, message)


# --- round trips: what the builders produce parses back as built --------------------------------

payloads = st.binary(max_size=640).map(lambda raw: base64.b64encode(raw).decode())
digits = st.sampled_from("0123456789*#")
finite = st.floats(allow_nan=False, allow_infinity=False)
json_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=15,
)
variable_names = st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True).filter(
    lambda name: not name.startswith(("system__", "secret__"))
)
variable_values = st.text() | st.integers() | finite | st.booleans()


@BUDGET
@given(stream_sid=any_text, payload=payloads, name=any_text)
def test_outbound_frames_round_trip(stream_sid: str, payload: str, name: str) -> None:
    """``OutboundFrames`` messages for any stream id and mark name read back exactly."""
    frames = OutboundFrames(stream_sid)
    audio = base64.b64decode(payload)
    read = read_server_message
    assert read(frames.media(payload), stream_sid=stream_sid) == ServerMedia(audio)
    assert read(frames.mark(name), stream_sid=stream_sid) == ServerMark(name)
    assert read(frames.clear, stream_sid=stream_sid) == ServerClear()


@BUDGET
@given(
    payload=payloads,
    timestamp=st.integers(min_value=0, max_value=10**12 - 1),
    chunk=st.integers(min_value=0, max_value=10**12 - 1),
    as_numbers=st.booleans(),
    digit=digits,
    name=any_text,
    params=st.dictionaries(any_text, any_text, max_size=4),
)
def test_twilio_inbound_frames_round_trip(
    payload: str,
    timestamp: int,
    chunk: int,
    as_numbers: bool,
    digit: str,
    name: str,
    params: dict[str, str],
) -> None:
    """Frames shaped as Twilio sends them (numbers as strings or not) parse to their fields."""
    number: Callable[[int], object] = (lambda n: n) if as_numbers else str
    media = {"payload": payload, "timestamp": number(timestamp), "chunk": number(chunk)}
    assert parse_frame(json.dumps({"event": "media", "media": media})) == Media(
        payload, timestamp, chunk
    )
    assert parse_frame(json.dumps({"event": "dtmf", "dtmf": {"digit": digit}})) == Dtmf(digit)
    assert parse_frame(json.dumps({"event": "mark", "mark": {"name": name}})) == Mark(name)
    assert parse_frame(json.dumps({"event": "stop", "stop": {"callSid": name}})) == Stop(name)
    start = _twilio_inbound()[1]
    start["start"]["customParameters"] = params
    parsed = parse_frame(json.dumps(start))
    assert isinstance(parsed, Start)
    assert (parsed.stream_sid, parsed.custom_parameters, parsed.sample_rate) == (SID, params, 8000)


@BUDGET
@given(
    input_format=st.sampled_from(sorted(managed.INPUT_FORMATS)),
    output_delivery=st.sampled_from(sorted(managed.OUTPUT_DELIVERIES)),
    variables=st.dictionaries(variable_names, variable_values, max_size=8),
    payload=payloads,
    digit=digits,
    tool_call_id=st.text(max_size=managed.MAX_TOOL_CALL_ID_CHARS),
    result=any_text,
    is_error=st.booleans(),
    error_type=st.none() | st.text(max_size=64),
)
def test_client_builders_round_trip(
    input_format: str,
    output_delivery: str,
    variables: dict[str, str | int | float | bool],
    payload: str,
    digit: str,
    tool_call_id: str,
    result: str,
    is_error: bool,
    error_type: str | None,
) -> None:
    """Every client message Archer builds is read back by the strict server-role parser."""
    created = parse_client_event(
        managed.session_create(
            input_format=input_format,
            dynamic_variables=variables,
            output_delivery=output_delivery,
        )
    )
    assert created == managed.SessionCreate(input_format, output_delivery, variables)
    assert parse_client_event(managed.audio_input(payload)) == managed.AudioInput(payload)
    assert parse_client_event(managed.dtmf_input(digit)) == managed.DtmfInput(digit)
    answer = managed.client_tool_result(
        tool_call_id, result, is_error=is_error, error_type=error_type
    )
    assert parse_client_event(answer) == managed.ClientToolResult(
        tool_call_id, result, is_error, error_type
    )


@BUDGET
@given(
    ids=st.tuples(any_text, any_text, any_text),
    payload=payloads,
    digit=digits,
    parameters=st.dictionaries(any_text, json_plain, max_size=4),
    expects_response=st.booleans(),
    turn=st.integers(),
    role=st.sampled_from(sorted(managed.ROLES)),
    times=st.tuples(finite, finite),
    text=any_text,
    interrupted=st.booleans(),
    code=st.sampled_from(sorted(managed.ERROR_CODES)),
    fatal=st.booleans(),
)
def test_server_builders_round_trip(
    ids: tuple[str, str, str],
    payload: str,
    digit: str,
    parameters: dict[str, object],
    expects_response: bool,
    turn: int,
    role: str,
    times: tuple[float, float],
    text: str,
    interrupted: bool,
    code: str,
    fatal: bool,
) -> None:
    """Every server message the emulators build is read back by Archer's client parser."""
    call_id, agent_id, version_id = ids
    start, end = times
    ready = managed.session_ready(
        call_id=call_id,
        agent_id=agent_id,
        agent_version_id=version_id,
        input_format="pcm_16000",
        output_delivery="as_available",
    )
    tool_calls = [{"id": call_id, "name": agent_id, "arguments": parameters}]
    expected: list[tuple[str, object]] = [
        (ready, managed.SessionReady(call_id, agent_id, version_id, "pcm_16000", "as_available")),
        (managed.audio_output(payload), managed.AudioOutput(payload)),
        (managed.audio_output_clear(), managed.AudioOutputClear()),
        (managed.dtmf_output(digit), managed.DtmfOutput(digit)),
        (
            managed.client_tool_call(
                call_id, agent_id, parameters, expects_response=expects_response
            ),
            managed.ClientToolCall(call_id, agent_id, parameters, expects_response),
        ),
        (managed.turn_started(turn, role, start), managed.TurnStarted(turn, role, start)),
        (
            managed.turn_output_text_delta(turn, text),
            managed.TurnOutputTextDelta(turn, "assistant", text),
        ),
        (
            managed.turn_ended(
                turn,
                role,
                text,
                interrupted=interrupted,
                start_time=start,
                end_time=end,
                tool_calls=tool_calls,
            ),
            managed.TurnEnded(turn, role, text, interrupted, start, end, tuple(tool_calls)),
        ),
        (managed.error(code, text, fatal=fatal), managed.Error(code, text, fatal)),
    ]
    for message, event in expected:
        assert parse_server_event(message) == event


# --- inputs that once escaped as the wrong exception (regression tests) -------------------------


@pytest.mark.parametrize("value", ["²", "¹²³", "①"])
def test_media_numbers_in_superscript_digits_are_a_protocol_error(value: str) -> None:
    """``media.timestamp`` of non-decimal digit characters is a protocol error, not ValueError."""
    message = json.dumps({"event": "media", "media": {"payload": PAYLOAD, "timestamp": value}})
    with pytest.raises(TwilioProtocolError):
        parse_frame(message)


@pytest.mark.parametrize("kind", ["turn_started", "turn_ended"])
def test_turn_times_too_large_for_a_float_are_ignored(kind: str) -> None:
    """A 400-digit ``start_time`` (only recorded) reads as absent and is named, no OverflowError."""
    fields = {"type": kind, "turn": 1, "role": "user", "text": "", "interrupted": False}
    fields.update({"start_time": 0, "end_time": 1, "tool_calls": []})
    message = json.dumps(fields).replace('"start_time": 0', '"start_time": 1' + "0" * 400)
    ignored: list[str] = []
    event = parse_server_event(message, ignored)
    assert isinstance(event, managed.TurnStarted | managed.TurnEnded)
    assert event.start_time is None
    assert f"{kind}.start_time" in ignored


def test_error_type_with_a_lone_surrogate_is_a_protocol_error() -> None:
    """``client_tool_result.error_type`` of ``"\\ud800"`` is a protocol error (emulator side)."""
    message = '{"type":"client_tool_result","tool_call_id":"c","result":"r","error_type":"\\ud800"}'
    with pytest.raises(CartesiaProtocolError):
        parse_client_event(message)


def test_protocol_errors_share_one_base() -> None:
    """Both parser errors are ``ProtocolError``s, which ``bridge_call`` maps to protocol_error."""
    assert issubclass(TwilioProtocolError, ProtocolError)
    assert issubclass(CartesiaProtocolError, ProtocolError)
