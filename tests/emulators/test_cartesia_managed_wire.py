"""What the Managed emulator writes (``managed_wire``) is what Cartesia's AsyncAPI publishes.

Each writer's output validates against the vendored schema of its message, and Archer's client
parser reads it as meaning what was written: a disagreement between the hand-written peer and
Archer's codec fails here, not in a live call.
"""

from __future__ import annotations

import base64
import json

import jsonschema
import pytest

from archer.cartesia import managed
from archer.emulators.cartesia import managed_wire
from archer.emulators.cartesia.managed_wire import SentError
from tests.contract.schemas import validate_cartesia_server_message

AUDIO = bytes(range(256)) * 2
TEXTS = ["Hello ", "", 'say "hi" \\ now', "naïve ✓ 日本", "lone \ud800 surrogate"]


def written(text: str) -> list[tuple[str, object]]:
    """Every message the emulator writes, with ``text`` wherever a message carries text, and
    what Archer's client parser must read from it."""
    tool_calls = [
        {"id": "call_1", "name": "verify_pin", "arguments": {"pin": text}, "result": text}
    ]
    return [
        (
            managed_wire.session_ready(
                call_id="ac_" + "a" * 22,
                agent_id="agent_emulated",
                agent_version_id="av_" + "b" * 22,
                input_format="mulaw_8000",
                output_delivery="as_available",
            ),
            managed.SessionReady(
                "ac_" + "a" * 22, "agent_emulated", "av_" + "b" * 22, "mulaw_8000", "as_available"
            ),
        ),
        (
            managed_wire.audio_output(AUDIO),
            managed.AudioOutput(base64.b64encode(AUDIO).decode("ascii")),
        ),
        (managed_wire.audio_output(b""), managed.AudioOutput("")),
        (managed_wire.audio_output_clear(), managed.AudioOutputClear()),
        *[(managed_wire.dtmf_output(digit), managed.DtmfOutput(digit)) for digit in "09*#"],
        (
            managed_wire.client_tool_call(
                "call_1", "verify_pin", {"pin": text, "n": [1, 2.5]}, expects_response=True
            ),
            managed.ClientToolCall("call_1", "verify_pin", {"pin": text, "n": [1, 2.5]}, True),
        ),
        (managed_wire.turn_started(1, "assistant", 0.0), managed.TurnStarted(1, "assistant", 0.0)),
        (managed_wire.turn_started(2, "user", 3.25), managed.TurnStarted(2, "user", 3.25)),
        (
            managed_wire.turn_output_text_delta(1, text),
            managed.TurnOutputTextDelta(1, "assistant", text),
        ),
        (
            managed_wire.turn_ended(
                1,
                "assistant",
                text,
                interrupted=True,
                start_time=0.5,
                end_time=1.75,
                tool_calls=tool_calls,
            ),
            managed.TurnEnded(1, "assistant", text, True, 0.5, 1.75, tuple(tool_calls)),
        ),
        (
            managed_wire.turn_ended(2, "user", text, interrupted=False, start_time=2, end_time=3),
            managed.TurnEnded(2, "user", text, False, 2.0, 3.0, ()),
        ),
        *[
            (
                managed_wire.error(SentError(code, text, fatal=fatal)),
                managed.Error(code, text, fatal),
            )
            for code in managed_wire.ERROR_CODES
            for fatal in (True, False)
        ],
    ]


@pytest.mark.parametrize("text", TEXTS)
def test_every_message_written_validates_against_the_published_schema(text: str) -> None:
    """Each writer's output is the AsyncAPI's message of its type (required fields included)."""
    messages = written(text)
    assert {json.loads(message)["type"] for message, _ in messages} == {
        "session_ready",
        "audio_output",
        "audio_output_clear",
        "dtmf_output",
        "client_tool_call",
        "turn_started",
        "turn_output_text_delta",
        "turn_ended",
        "error",
    }, "every server message the AsyncAPI lists is written"
    for message, _ in messages:
        validate_cartesia_server_message(message)


@pytest.mark.parametrize("text", TEXTS)
def test_archer_reads_every_message_as_written(text: str) -> None:
    """Archer's client parser reads each message as meaning what the emulator wrote, no drift."""
    for message, meaning in written(text):
        ignored: list[str] = []
        assert managed.parse_server_event(message, ignored) == meaning
        assert ignored == [], message


def test_messages_are_compact_ascii_json() -> None:
    """Compact like Cartesia's examples; non-ASCII escaped, so any text encodes as a frame."""
    message = managed_wire.turn_output_text_delta(3, "café \ud800")
    assert message == (
        '{"type":"turn_output_text_delta","turn":3,"role":"assistant","text":"caf\\u00e9 \\ud800"}'
    )
    message.encode("ascii")


def test_an_error_code_the_asyncapi_does_not_list_is_a_bug_in_the_emulator() -> None:
    """``error`` refuses a code outside the schema's enum rather than write what no client knows."""
    with pytest.raises(ValueError, match="not one of"):
        managed_wire.error(SentError("oops", "bad", fatal=True))


def test_the_validator_would_notice_a_wrong_writer() -> None:
    """The schema check bites: a ``turn_ended`` without ``tool_calls`` is refused."""
    message = json.loads(
        managed_wire.turn_ended(1, "user", "x", interrupted=False, start_time=0, end_time=1)
    )
    del message["tool_calls"]
    with pytest.raises(jsonschema.ValidationError, match="tool_calls"):
        validate_cartesia_server_message(json.dumps(message))
