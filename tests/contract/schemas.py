"""Validators that check real traffic against the peers' PUBLISHED message schemas.

Any test may import these to assert that what Archer (or an emulator) put on a socket is what
Cartesia's and Twilio's AsyncAPI documents describe, independently of Archer's own parsers.

Sources: ``<repo>/../shared/reference/`` when that directory exists (the team's reference
copies), else the byte-identical copies in ``vendored/`` so the tests also run from a bare
checkout; ``test_schemas.py`` proves the two agree.

Rules: each validator takes one text message, picks the component schema by the message's
discriminator (``type`` for Cartesia, ``event`` for Twilio), and raises
``jsonschema.ValidationError`` when the message breaks it, or ``AssertionError`` when the
discriminator names no message in that direction. ``$ref``s resolve inside their own document.
``format: byte`` is checked as strict base64. Two checks go beyond the schema text, each for a
documented reason: Cartesia's ``audio`` must be base64 (the schema says so in prose only), and
what Archer sends Twilio may carry no field the schema does not declare (Twilio answers extra
fields with warning 31951).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final

import jsonschema
import yaml
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

_HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = _HERE.parents[1]
SHARED_REFERENCE: Final = REPO_ROOT.parent / "shared" / "reference"
VENDORED: Final = _HERE / "vendored"

CARTESIA_SCHEMA_NAME: Final = "managed-agents-asyncapi.json"
TWILIO_SCHEMA_NAME: Final = "twilio-asyncapi.yml"
CARTESIA_SHARED: Final = SHARED_REFERENCE / "cartesia-asyncapi" / CARTESIA_SCHEMA_NAME
TWILIO_SHARED: Final = SHARED_REFERENCE / "twilio-asyncapi" / TWILIO_SCHEMA_NAME

_CARTESIA_URI: Final = "urn:archer:contract:cartesia-managed-agents"
_TWILIO_URI: Final = "urn:archer:contract:twilio"
# The same Twilio document with every object schema closed (additionalProperties: false).
_TWILIO_CLOSED_URI: Final = "urn:archer:contract:twilio-closed"

#: Cartesia ``type`` → component schema, for what the client sends.
CARTESIA_CLIENT_MESSAGES: Final = {
    "session_create": "AgentSessionCreateEvent",
    "audio_input": "AgentAudioInputEvent",
    "dtmf_input": "AgentDtmfInputEvent",
    "client_tool_result": "AgentClientToolResultEvent",
}
#: Cartesia ``type`` → component schema, for what the agent server sends.
CARTESIA_SERVER_MESSAGES: Final = {
    "session_ready": "AgentSessionReadyEvent",
    "audio_output": "AgentAudioOutputEvent",
    "audio_output_clear": "AgentAudioOutputClearEvent",
    "dtmf_output": "AgentDtmfOutputEvent",
    "client_tool_call": "AgentClientToolCallEvent",
    "turn_started": "AgentTurnStartedEvent",
    "turn_output_text_delta": "AgentTurnOutputTextDeltaEvent",
    "turn_ended": "AgentTurnEndedEvent",
    "error": "AgentErrorEvent",
}
#: Twilio ``event`` → component schema, for what Archer sends on a media stream.
TWILIO_OUTBOUND_MESSAGES: Final = {
    "media": "MediaOutboundMedia",
    "mark": "MediaOutboundMark",
    "clear": "MediaOutboundClear",
}
#: Twilio ``event`` → component schema, for what Twilio sends on a media stream.
TWILIO_INBOUND_MESSAGES: Final = {
    "connected": "MediaConnected",
    "start": "MediaStart",
    "media": "MediaMedia",
    "dtmf": "MediaDtmf",
    "mark": "MediaMark",
    "stop": "MediaStop",
}

_AUDIO_TYPES: Final = frozenset({"audio_input", "audio_output"})

FORMAT_CHECKER: Final = FormatChecker(formats=())


@FORMAT_CHECKER.checks("byte", raises=(binascii.Error, ValueError))
def _is_base64(instance: object) -> bool:
    # Formats only constrain strings; a non-string is the "type" keyword's business.
    if isinstance(instance, str):
        binascii.a2b_base64(instance, strict_mode=True)
    return True


def schema_source(shared: Path, vendored_name: str) -> Path:
    """The shared reference file when ``../shared/reference`` exists, else the vendored copy."""
    return shared if SHARED_REFERENCE.is_dir() else VENDORED / vendored_name


@cache
def cartesia_document() -> Mapping[str, Any]:
    """Cartesia's Managed Agents AsyncAPI document."""
    path = schema_source(CARTESIA_SHARED, CARTESIA_SCHEMA_NAME)
    document: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@cache
def twilio_document() -> Mapping[str, Any]:
    """Twilio's real-time WebSocket AsyncAPI document."""
    path = schema_source(TWILIO_SHARED, TWILIO_SCHEMA_NAME)
    document: Mapping[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def closed(schema: Any) -> Any:
    """A copy of ``schema`` in which every object with ``properties`` allows no other keys.

    Walks only schema positions (``properties``, ``items``, ``additionalProperties``,
    ``*Of``), so a property that happens to be named ``properties`` is not mistaken for one.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: closed(sub) for name, sub in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = closed(out[key])
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = [closed(sub) for sub in out[key]]
    return out


def _closed_document(document: Mapping[str, Any]) -> dict[str, Any]:
    components = dict(document["components"])
    components["schemas"] = {
        name: closed(schema) for name, schema in document["components"]["schemas"].items()
    }
    return {**document, "components": components}


@cache
def _registry() -> Registry[Any]:
    def resource(document: Mapping[str, Any]) -> Resource[Any]:
        # AsyncAPI schema objects are a superset of JSON Schema draft 7.
        return Resource.from_contents(document, default_specification=DRAFT7)

    return Registry().with_resources(
        [
            (_CARTESIA_URI, resource(cartesia_document())),
            (_TWILIO_URI, resource(twilio_document())),
            (_TWILIO_CLOSED_URI, resource(_closed_document(twilio_document()))),
        ]
    )


@cache
def _validator(document_uri: str, component: str) -> Draft7Validator:
    return Draft7Validator(
        {"$ref": f"{document_uri}#/components/schemas/{component}"},
        registry=_registry(),
        format_checker=FORMAT_CHECKER,
    )


def _load(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise jsonschema.ValidationError(f"message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise jsonschema.ValidationError(f"message is not a JSON object: {text[:80]!r}")
    return message


def _component(
    message: Mapping[str, Any], key: str, table: Mapping[str, str], direction: str
) -> str:
    name = message.get(key)
    if not isinstance(name, str) or name not in table:
        raise AssertionError(f"{direction}: no message has {key} {name!r}")
    return table[name]


def _validate_cartesia(text: str, table: Mapping[str, str], direction: str) -> None:
    message = _load(text)
    component = _component(message, "type", table, direction)
    _validator(_CARTESIA_URI, component).validate(message)
    if message["type"] in _AUDIO_TYPES:
        try:
            binascii.a2b_base64(message["audio"], strict_mode=True)
        except (binascii.Error, ValueError):
            raise jsonschema.ValidationError(
                f"{message['type']}.audio is not valid base64"
            ) from None


def validate_cartesia_client_message(text: str) -> None:
    """Check one message a client sends to a Cartesia Managed Agent."""
    _validate_cartesia(text, CARTESIA_CLIENT_MESSAGES, "Cartesia client → server")


def validate_cartesia_server_message(text: str) -> None:
    """Check one message a Cartesia Managed Agent sends to its client."""
    _validate_cartesia(text, CARTESIA_SERVER_MESSAGES, "Cartesia server → client")


def validate_twilio_outbound(text: str) -> None:
    """Check one message Archer sends Twilio on a media stream; undeclared keys are errors."""
    message = _load(text)
    component = _component(message, "event", TWILIO_OUTBOUND_MESSAGES, "Archer → Twilio")
    _validator(_TWILIO_CLOSED_URI, component).validate(message)


def validate_twilio_inbound(text: str) -> None:
    """Check one message Twilio (or the Twilio emulator) sends on a media stream."""
    message = _load(text)
    component = _component(message, "event", TWILIO_INBOUND_MESSAGES, "Twilio → Archer")
    _validator(_TWILIO_URI, component).validate(message)
