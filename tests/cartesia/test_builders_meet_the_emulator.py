"""What Archer builds for Cartesia, the emulators' hand-written readers accept as meaning the same.

The emulators read client messages by hand from Cartesia's documents
(``archer.emulators.cartesia.managed_messages``, ``line_messages``), not with Archer's codec, so
these tests are where Archer's builders and the documented peer are held to agree: every message
built reads back as built (the Managed ones also validate against the published schema), and
what a builder refuses to build is what the peer would refuse to read, for the same reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archer.cartesia import line, managed
from archer.emulators.cartesia.client_messages import ClientMessageError
from archer.emulators.cartesia.line_messages import (
    Custom,
    Dtmf,
    LineToolResult,
    MediaInput,
    Start,
    read_line_message,
    tool_result_of,
)
from archer.emulators.cartesia.managed_messages import (
    AudioInput,
    ClientToolResult,
    DtmfInput,
    SessionCreate,
    read_managed_message,
)
from tests.contract.schemas import validate_cartesia_client_message

BUDGET = settings(max_examples=100, deadline=None, derandomize=True, database=None)
INPUT_FORMATS = ["mulaw_8000", "pcm_16000", "pcm_24000", "pcm_44100"]
AUDIO = bytes(range(256))
PAYLOAD = base64.b64encode(AUDIO).decode("ascii")

any_text = st.text(st.characters(exclude_categories=()), max_size=40)
payloads = st.binary(max_size=640)
digits = st.sampled_from("0123456789*#")
finite = st.floats(allow_nan=False, allow_infinity=False)
variable_names = st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True).filter(
    lambda name: not name.startswith(("system__", "secret__"))
)
variable_values = st.text() | st.integers() | finite | st.booleans()
json_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=15,
)


# ---- Managed Agents ---------------------------------------------------------------------------


@BUDGET
@given(
    input_format=st.sampled_from(INPUT_FORMATS),
    output_delivery=st.sampled_from(["speaking_pace", "as_available"]),
    variables=st.dictionaries(variable_names, variable_values, max_size=8),
    audio=payloads,
    digit=digits,
    tool_call_id=st.text(max_size=256),
    result=any_text,
    is_error=st.booleans(),
    error_type=st.none() | st.text(max_size=64),
)
def test_managed_messages_archer_builds_read_back_as_built(
    input_format: str,
    output_delivery: str,
    variables: dict[str, str | int | float | bool],
    audio: bytes,
    digit: str,
    tool_call_id: str,
    result: str,
    is_error: bool,
    error_type: str | None,
) -> None:
    """Every client message Archer builds is read by the emulator as meaning what was built."""
    payload = base64.b64encode(audio).decode("ascii")
    built = [
        (
            managed.session_create(
                input_format=input_format,
                dynamic_variables=variables,
                output_delivery=output_delivery,
            ),
            SessionCreate(input_format, output_delivery, variables),
        ),
        (managed.audio_input(payload), AudioInput(payload)),
        (managed.dtmf_input(digit), DtmfInput(digit)),
        (
            managed.client_tool_result(
                tool_call_id, result, is_error=is_error, error_type=error_type
            ),
            ClientToolResult(tool_call_id, result, is_error, error_type),
        ),
    ]
    for message, meaning in built:
        assert read_managed_message(message) == meaning


def test_managed_messages_archer_builds_are_the_published_ones() -> None:
    """The same messages validate against Cartesia's AsyncAPI schemas."""
    for message in (
        managed.session_create(input_format="mulaw_8000", dynamic_variables={}),
        managed.session_create(
            input_format="pcm_16000",
            dynamic_variables={"caller": "+15551230000", "tier": 2, "vip": True, "score": 0.5},
            output_delivery="as_available",
        ),
        managed.audio_input(PAYLOAD),
        managed.dtmf_input("#"),
        managed.client_tool_result("call_1", "naïve ✓", is_error=True, error_type="timeout"),
        managed.client_tool_result("call_1", "", is_error=False),
    ):
        validate_cartesia_client_message(message)
        read_managed_message(message)


#: (what Archer is asked to build, the same message written out, the problem both name) for
#: what Cartesia refuses.
MANAGED_REFUSED: list[tuple[Callable[[], str], str, str]] = [
    (lambda: managed.dtmf_input("A"), '{"type":"dtmf_input","digit":"A"}', "not a DTMF digit"),
    (lambda: managed.dtmf_input("12"), '{"type":"dtmf_input","digit":"12"}', "not a DTMF digit"),
    (lambda: managed.dtmf_input(""), '{"type":"dtmf_input","digit":""}', "not a DTMF digit"),
    (
        lambda: managed.session_create(input_format="pcm_8000", dynamic_variables={}),
        '{"type":"session_create","audio":{"input_format":"pcm_8000"}}',
        "input_format 'pcm_8000' is not one of",
    ),
    (
        lambda: managed.session_create(
            input_format="mulaw_8000", dynamic_variables={}, output_delivery="fast"
        ),
        '{"type":"session_create","audio":{"input_format":"mulaw_8000","output_delivery":"fast"}}',
        "output_delivery 'fast' is not one of",
    ),
    *[
        (
            lambda variables=variables: managed.session_create(
                input_format="mulaw_8000", dynamic_variables=variables
            ),
            json.dumps(
                {
                    "type": "session_create",
                    "audio": {"input_format": "mulaw_8000"},
                    "dynamic_variables": variables,
                }
            ),
            problem,
        )
        for variables, problem in (
            ({"a-b": "1"}, "is not 1-64 of"),
            ({"": "1"}, "is not 1-64 of"),
            ({"x" * 65: "1"}, "is not 1-64 of"),
            ({"system__pin": "1"}, "reserved prefix"),
            ({"secret__key": "1"}, "reserved prefix"),
            ({"a": None}, "not a string, number or boolean"),
            ({"a": [1]}, "not a string, number or boolean"),
            ({f"v{n}": n for n in range(65)}, "more than 64 entries"),
        )
    ],
    (
        lambda: managed.client_tool_result("c", "r", is_error=True, error_type="é" * 129),
        json.dumps(
            {
                "type": "client_tool_result",
                "tool_call_id": "c",
                "result": "r",
                "is_error": True,
                "error_type": "é" * 129,
            }
        ),
        "error_type is over 256 UTF-8 bytes",
    ),
]


@pytest.mark.parametrize(("build", "written", "problem"), MANAGED_REFUSED)
def test_what_archer_will_not_build_the_managed_emulator_will_not_read(
    build: Callable[[], str], written: str, problem: str
) -> None:
    """A message Archer's builder refuses (``ValueError``) the emulator refuses too, and both
    name the same problem."""
    with pytest.raises(ValueError, match=problem) as refused:
        build()
    assert not isinstance(refused.value, ClientMessageError)
    with pytest.raises(ClientMessageError, match=problem):
        read_managed_message(written)


# ---- Line (Calls API) -------------------------------------------------------------------------


@BUDGET
@given(
    input_format=st.sampled_from(INPUT_FORMATS),
    stream_id=st.none() | any_text.filter(bool),
    overrides=st.tuples(st.none() | any_text, st.none() | any_text, st.none() | any_text),
    metadata=st.dictionaries(any_text, any_text, max_size=4),
    audio=payloads,
    digit=digits,
    custom=st.dictionaries(any_text.filter(lambda key: key != "archer_tool_result"), json_plain),
    tool_call_id=st.text(min_size=1, max_size=256),
    result=any_text,
    is_error=st.booleans(),
)
def test_line_messages_archer_builds_read_back_as_built(
    input_format: str,
    stream_id: str | None,
    overrides: tuple[str | None, str | None, str | None],
    metadata: dict[str, str],
    audio: bytes,
    digit: str,
    custom: dict[str, object],
    tool_call_id: str,
    result: str,
    is_error: bool,
) -> None:
    """Every Line message Archer builds is read by the emulator as meaning what was built."""
    voice_id, introduction, system_prompt = overrides
    started = line.start(
        input_format=input_format,
        metadata=metadata,
        stream_id=stream_id,
        voice_id=voice_id,
        introduction=introduction,
        system_prompt=system_prompt,
    )
    assert read_line_message(started) == Start(
        stream_id, input_format, voice_id, introduction, system_prompt, metadata
    )
    sid = stream_id or "sid_0123456789abcdef"
    payload = base64.b64encode(audio).decode("ascii")
    assert read_line_message(line.media_input(sid, payload)) == MediaInput(sid, audio)
    assert read_line_message(line.dtmf(sid, digit)) == Dtmf(digit)
    assert read_line_message(line.custom(sid, custom)) == Custom(custom)
    assert tool_result_of(custom) is None
    answer = read_line_message(line.tool_result(sid, tool_call_id, result, is_error=is_error))
    assert isinstance(answer, Custom)
    assert tool_result_of(answer.metadata) == LineToolResult(tool_call_id, result, is_error)


LINE_REFUSED: list[tuple[Callable[[], str], str, str]] = [
    (
        lambda: line.start(input_format="alaw_8000", metadata={}),
        '{"event":"start","config":{"input_format":"alaw_8000"}}',
        "input_format 'alaw_8000' is not one of",
    ),
    (
        lambda: line.start(input_format="mulaw_8000", metadata={}, stream_id=""),
        '{"event":"start","stream_id":"","config":{"input_format":"mulaw_8000"}}',
        "stream_id is empty",
    ),
    (
        lambda: line.dtmf("s", "A"),
        '{"event":"dtmf","stream_id":"s","dtmf":"A"}',
        "not a DTMF digit",
    ),
    (
        lambda: line.dtmf("s", "##"),
        '{"event":"dtmf","stream_id":"s","dtmf":"##"}',
        "not a DTMF digit",
    ),
]


@pytest.mark.parametrize(("build", "written", "problem"), LINE_REFUSED)
def test_what_archer_will_not_build_the_line_emulator_will_not_read(
    build: Callable[[], str], written: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        build()
    assert not isinstance(refused.value, ClientMessageError)
    with pytest.raises(ClientMessageError, match=problem):
        read_line_message(written)


@pytest.mark.parametrize("tool_call_id", ["", "c" * 257])
def test_a_tool_result_id_archer_will_not_send_the_line_emulator_will_not_take(
    tool_call_id: str,
) -> None:
    problem = "is empty or over 256 characters"
    with pytest.raises(ValueError, match=problem):
        line.tool_result("s", tool_call_id, "r", is_error=False)
    metadata = {"archer_tool_result": tool_call_id, "result": "r", "is_error": False}
    with pytest.raises(ClientMessageError, match=problem):
        tool_result_of(metadata)
