"""The Cartesia emulators' readers of what a client sends: what they accept, what they refuse.

Managed messages are the AsyncAPI's: each accepted one is checked against the vendored schema, and
each refusal the schema can judge is refused by the schema too. Line has no published schema; its
shapes are those of cartesia-agents.md §2.A.
"""

from __future__ import annotations

import base64
import json

import jsonschema
import pytest

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

PAYLOAD = base64.b64encode(b"\xff" * 160).decode("ascii")
CREATE = '{"type":"session_create","audio":{"input_format":"mulaw_8000"}'


# ---- Managed Agents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "meaning"),
    [
        # The reference's own examples (cartesia-agents.md §2.B).
        (
            '{"type":"session_create","audio":{"input_format":"mulaw_8000","output_delivery":'
            '"speaking_pace"},"dynamic_variables":{"caller_number":"+15551230000"}}',
            SessionCreate("mulaw_8000", "speaking_pace", {"caller_number": "+15551230000"}),
        ),
        (
            '{"type":"client_tool_result","tool_call_id":"call_2b7e4f9a1c0d",'
            '"result":"2 items in cart","is_error":false}',
            ClientToolResult("call_2b7e4f9a1c0d", "2 items in cart", False, None),
        ),
        ('{"type":"dtmf_input","digit":"5"}', DtmfInput("5")),
        # Defaults, the other enum values, every variable type.
        (CREATE + "}", SessionCreate("mulaw_8000", "speaking_pace", {})),
        (
            '{"type":"session_create","audio":{"input_format":"pcm_44100","output_delivery":'
            '"as_available"},"dynamic_variables":{"a":"x","b":2,"c":2.5,"D_9":true}}',
            SessionCreate("pcm_44100", "as_available", {"a": "x", "b": 2, "c": 2.5, "D_9": True}),
        ),
        (f'{{"type":"audio_input","audio":"{PAYLOAD}"}}', AudioInput(PAYLOAD)),
        ('{"type":"dtmf_input","digit":"#"}', DtmfInput("#")),
        (
            '{"type":"client_tool_result","tool_call_id":"c","result":"","error_type":"timeout",'
            '"is_error":true}',
            ClientToolResult("c", "", True, "timeout"),
        ),
        # Other events are not additionalProperties:false: unknown fields are ignored.
        ('{"type":"dtmf_input","digit":"1","note":"x"}', DtmfInput("1")),
    ],
)
def test_managed_reader_accepts_what_the_asyncapi_publishes(message: str, meaning: object) -> None:
    """Each accepted message is valid by the published schema and reads as what it says."""
    validate_cartesia_client_message(message)
    assert read_managed_message(message) == meaning


LONG_ID = "c" * 257
#: (message, complaint, event named (None: fatal), error code, the schema refuses it too)
MANAGED_REFUSED = [
    (b'{"type":"dtmf_input","digit":"1"}', "binary frame", None, "invalid_event", False),
    ("not json", "not valid JSON", None, "invalid_event", False),
    ('{"type":"dtmf_input","digit":NaN}', "not valid JSON", None, "invalid_event", False),
    ("[1]", "not a JSON object", None, "invalid_event", False),
    ('{"digit":"1"}', "no type", None, "invalid_event", False),
    ('{"type":"session_ready"}', "not a client event", None, "invalid_event", False),
    ('{"type":7}', "no type", None, "invalid_event", False),
    (CREATE + ',"bogus":1}', "unknown field 'bogus'", "session_create", "invalid_event", True),
    (
        '{"type":"session_create","audio":{"input_format":"mulaw_8000","rate":8000}}',
        "session_create.audio has unknown field 'rate'",
        "session_create",
        "invalid_event",
        True,
    ),
    ('{"type":"session_create"}', "audio is missing", "session_create", "invalid_event", True),
    (
        '{"type":"session_create","audio":{}}',
        "input_format is missing",
        "session_create",
        "invalid_event",
        True,
    ),
    (
        '{"type":"session_create","audio":{"input_format":"pcm_8000"}}',
        "'pcm_8000' is not one of",
        "session_create",
        "invalid_event",
        True,
    ),
    (
        '{"type":"session_create","audio":{"input_format":"mulaw_8000","output_delivery":"x"}}',
        "output_delivery 'x' is not one of",
        "session_create",
        "invalid_event",
        True,
    ),
    (
        CREATE + ',"dynamic_variables":[]}',
        "dynamic_variables is not an object",
        "session_create",
        "invalid_dynamic_variables",
        True,
    ),
    (
        CREATE + ',"dynamic_variables":{"system__x":"1"}}',
        "reserved prefix",
        "session_create",
        "invalid_dynamic_variables",
        False,  # the prefixes are in the schema's prose only
    ),
    (
        CREATE + ',"dynamic_variables":{"a-b":"1"}}',
        "is not 1-64 of",
        "session_create",
        "invalid_dynamic_variables",
        False,
    ),
    (
        CREATE + ',"dynamic_variables":{"a":null}}',
        "not a string, number or boolean",
        "session_create",
        "invalid_dynamic_variables",
        True,
    ),
    (
        CREATE + ',"dynamic_variables":{"a":{"b":1}}}',
        "not a string, number or boolean",
        "session_create",
        "invalid_dynamic_variables",
        True,
    ),
    (
        CREATE + ',"dynamic_variables":' + json.dumps({f"v{n}": n for n in range(65)}) + "}",
        "more than 64",
        "session_create",
        "invalid_dynamic_variables",
        True,
    ),
    (
        '{"type":"audio_input"}',
        "audio_input.audio is missing",
        "audio_input",
        "invalid_event",
        True,
    ),
    ('{"type":"audio_input","audio":5}', "not a string", "audio_input", "invalid_event", True),
    ('{"type":"dtmf_input","digit":"x"}', "not a DTMF digit", "dtmf_input", "invalid_event", True),
    ('{"type":"dtmf_input","digit":"12"}', "not a DTMF digit", "dtmf_input", "invalid_event", True),
    ('{"type":"dtmf_input"}', "digit is missing", "dtmf_input", "invalid_event", True),
    (
        '{"type":"client_tool_result","result":"r"}',
        "tool_call_id is missing",
        "client_tool_result",
        "invalid_event",
        True,
    ),
    (
        '{"type":"client_tool_result","tool_call_id":"' + LONG_ID + '","result":"r"}',
        "over 256 characters",
        "client_tool_result",
        "invalid_event",
        True,
    ),
    (
        '{"type":"client_tool_result","tool_call_id":"c"}',
        "result is missing",
        "client_tool_result",
        "invalid_event",
        True,
    ),
    (
        '{"type":"client_tool_result","tool_call_id":"c","result":{"ok":1}}',
        "result is missing or not a string",
        "client_tool_result",
        "invalid_event",
        True,
    ),
    (
        '{"type":"client_tool_result","tool_call_id":"c","result":"r","is_error":"yes"}',
        "is_error is not a boolean",
        "client_tool_result",
        "invalid_event",
        True,
    ),
    (
        '{"type":"client_tool_result","tool_call_id":"c","result":"r","error_type":"'
        + "é" * 129
        + '"}',
        "over 256 UTF-8 bytes",
        "client_tool_result",
        "invalid_event",
        False,  # the schema says so in prose; its maxLength counts characters, not bytes
    ),
    (
        '{"type":"client_tool_result","tool_call_id":"c","result":"r","error_type":"\\ud800"}',
        "not UTF-8 text",
        "client_tool_result",
        "invalid_event",
        False,
    ),
]


@pytest.mark.parametrize(
    ("message", "complaint", "event", "code", "schema_refuses"), MANAGED_REFUSED
)
def test_managed_reader_refuses_what_cartesia_refuses(
    message: str | bytes, complaint: str, event: str | None, code: str, schema_refuses: bool
) -> None:
    """Each bad message raises ``ClientMessageError`` naming the problem, the event it named
    (``None``: not a client event, so fatal) and the code Cartesia answers with."""
    with pytest.raises(ClientMessageError, match=complaint) as refused:
        read_managed_message(message)
    assert (refused.value.event, refused.value.code) == (event, code)
    if schema_refuses:
        assert isinstance(message, str)
        with pytest.raises(jsonschema.ValidationError):
            validate_cartesia_client_message(message)


# ---- Line (Calls API) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "meaning"),
    [
        # The reference's own examples (cartesia-agents.md §2.A).
        (
            '{"event":"start","stream_id":"call-123","config":{"input_format":"mulaw_8000",'
            '"voice_id":"a0e9"},"agent":{"introduction":"Hi, how can I help?","system_prompt":'
            '"You are ..."},"metadata":{"from":"+15551230000","to":"+15559870000","crm_id":"42"}}',
            Start(
                "call-123",
                "mulaw_8000",
                "a0e9",
                "Hi, how can I help?",
                "You are ...",
                {"from": "+15551230000", "to": "+15559870000", "crm_id": "42"},
            ),
        ),
        (
            f'{{"event":"media_input","stream_id":"call-123","media":{{"payload":"{PAYLOAD}"}}}}',
            MediaInput("call-123", b"\xff" * 160),
        ),
        ('{"event":"dtmf","stream_id":"call-123","dtmf":"5"}', Dtmf("5")),
        (
            '{"event":"custom","stream_id":"call-123","metadata":{"user_id":"u1","note":"x"}}',
            Custom({"user_id": "u1", "note": "x"}),
        ),
        # What is optional: the stream id (a third-party harness sends none), agent, metadata.
        ('{"event":"start","config":{"input_format":"pcm_16000"}}', Start(None, "pcm_16000")),
        (
            '{"event":"start","config":{"input_format":"pcm_24000","output_audio_delivery":'
            '"as_available"}}',
            Start(None, "pcm_24000"),
        ),
        (
            f'{{"event":"media_input","media":{{"payload":"{PAYLOAD}"}}}}',
            MediaInput(None, b"\xff" * 160),
        ),
        ('{"event":"dtmf","dtmf":"*"}', Dtmf("*")),
    ],
)
def test_line_reader_accepts_the_documented_messages(message: str, meaning: object) -> None:
    assert read_line_message(message) == meaning


LINE_REFUSED = [
    (b'{"event":"dtmf","dtmf":"1"}', "binary frame", None),
    ("{", "not valid JSON", None),
    ('"start"', "not a JSON object", None),
    ('{"type":"start"}', "no event", None),
    ('{"event":"ping"}', "'ping' is not a client event", None),
    ('{"event":"media_output","media":{"payload":"//8="}}', "not a client event", None),
    ('{"event":"start"}', "start.config is missing", "start"),
    ('{"event":"start","config":{}}', "input_format is missing", "start"),
    ('{"event":"start","config":{"input_format":"alaw_8000"}}', "is not one of", "start"),
    ('{"event":"start","stream_id":"","config":{"input_format":"pcm_16000"}}', "empty", "start"),
    (
        '{"event":"start","stream_id":5,"config":{"input_format":"pcm_16000"}}',
        "not a string",
        "start",
    ),
    (
        '{"event":"start","config":{"input_format":"pcm_16000","voice_id":1}}',
        "voice_id is not a string",
        "start",
    ),
    (
        '{"event":"start","config":{"input_format":"pcm_16000"},"agent":[]}',
        "agent is not an",
        "start",
    ),
    (
        '{"event":"start","config":{"input_format":"pcm_16000"},"agent":{"introduction":1}}',
        "introduction is not a string",
        "start",
    ),
    (
        '{"event":"start","config":{"input_format":"pcm_16000"},"metadata":null}',
        "metadata is not an object",
        "start",
    ),
    ('{"event":"media_input","stream_id":"s"}', "media is missing", "media_input"),
    ('{"event":"media_input","media":{}}', "payload is missing", "media_input"),
    ('{"event":"media_input","media":{"payload":"//8"}}', "not base64", "media_input"),
    ('{"event":"media_input","media":{"payload":"é"}}', "not base64", "media_input"),
    ('{"event":"dtmf","dtmf":"A"}', "not a DTMF digit", "dtmf"),
    ('{"event":"dtmf","digit":"1"}', "dtmf.dtmf is missing", "dtmf"),
    ('{"event":"dtmf","stream_id":[],"dtmf":"1"}', "stream_id is not a string", "dtmf"),
    ('{"event":"custom"}', "metadata is missing", "custom"),
    ('{"event":"custom","metadata":"x"}', "metadata is missing or not an object", "custom"),
]


@pytest.mark.parametrize(("message", "complaint", "event"), LINE_REFUSED)
def test_line_reader_refuses_what_it_cannot_read(
    message: str | bytes, complaint: str, event: str | None
) -> None:
    """Each bad message raises ``ClientMessageError`` naming the problem (the close reason)."""
    with pytest.raises(ClientMessageError, match=complaint) as refused:
        read_line_message(message)
    assert refused.value.event == event


def test_tool_results_over_custom_events() -> None:
    """Archer's convention: ``archer_tool_result`` names the call; other metadata is not one."""
    metadata = {"archer_tool_result": "call_1", "result": '{"ok":true}', "is_error": False}
    assert tool_result_of(metadata) == LineToolResult("call_1", '{"ok":true}', False)
    assert tool_result_of({"user_id": "u1"}) is None
    for bad, complaint in [
        ({"archer_tool_result": "", "result": "r", "is_error": False}, "empty or over 256"),
        ({"archer_tool_result": "c" * 257, "result": "r", "is_error": False}, "over 256"),
        ({"archer_tool_result": 1, "result": "r", "is_error": False}, "not a string"),
        ({"archer_tool_result": "c", "is_error": False}, "result is missing"),
        ({"archer_tool_result": "c", "result": "r"}, "is_error is missing"),
        ({"archer_tool_result": "c", "result": "r", "is_error": 0}, "not a boolean"),
    ]:
        with pytest.raises(ClientMessageError, match=complaint):
            tool_result_of(bad)
