"""TwiML builders: exact document structure and the limits Twilio enforces."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from archer.twilio import twiml

STREAM_URL = "wss://archer.example.com/ws/cartesia"


def _parse(document: str) -> ET.Element:
    # Twilio rejects anything before the XML declaration (error 12100).
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?><Response')
    return ET.fromstring(document)


def test_connect_stream_structure() -> None:
    """connect_stream is Response/Connect/Stream(url) with one Parameter each, then Hangup."""
    root = _parse(
        twiml.connect_stream(
            stream_url=STREAM_URL,
            parameters={"call_sid": "CA123", "customer_id": "42", "token": "t0k"},
        )
    )
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    connect, hangup = root
    assert connect.attrib == {}
    assert len(hangup) == 0
    assert [child.tag for child in connect] == ["Stream"]
    stream = connect[0]
    assert stream.attrib == {"url": STREAM_URL}
    assert [(p.tag, p.attrib) for p in stream] == [
        ("Parameter", {"name": "call_sid", "value": "CA123"}),
        ("Parameter", {"name": "customer_id", "value": "42"}),
        ("Parameter", {"name": "token", "value": "t0k"}),
    ]


def test_connect_stream_escapes_parameter_values() -> None:
    """Parameter values with XML metacharacters survive escaping intact."""
    value = "<a & \"b\" 'c'>"
    root = _parse(twiml.connect_stream(stream_url=STREAM_URL, parameters={"p": value}))
    parameter = root.find("./Connect/Stream/Parameter")
    assert parameter is not None
    assert parameter.get("value") == value


def test_connect_stream_without_parameters() -> None:
    """connect_stream with no parameters has an empty Stream."""
    root = _parse(twiml.connect_stream(stream_url=STREAM_URL, parameters={}))
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert list(stream) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://archer.example.com/ws/cartesia",
        "ws://archer.example.com/ws/cartesia",
        "/ws/cartesia",
        "wss:///ws/cartesia",
    ],
)
def test_connect_stream_rejects_non_wss_url(url: str) -> None:
    """connect_stream refuses anything but an absolute wss:// URL (Twilio error 31922)."""
    with pytest.raises(ValueError, match="wss://"):
        twiml.connect_stream(stream_url=url, parameters={})


@pytest.mark.parametrize("url", [STREAM_URL + "?token=x", STREAM_URL + "?", STREAM_URL + "#f"])
def test_connect_stream_rejects_query_string(url: str) -> None:
    """connect_stream refuses a query string or fragment, which Twilio would drop."""
    with pytest.raises(ValueError, match="query"):
        twiml.connect_stream(stream_url=url, parameters={})


def test_connect_stream_parameter_limit_is_under_500_chars() -> None:
    """A parameter's name plus value must be under 500 characters: 499 passes, 500 fails."""
    name = "token"
    ok = twiml.connect_stream(stream_url=STREAM_URL, parameters={name: "v" * (499 - len(name))})
    parameter = _parse(ok).find("./Connect/Stream/Parameter")
    assert parameter is not None
    assert len(name) + len(parameter.get("value", "")) == 499
    with pytest.raises(ValueError, match="500"):
        twiml.connect_stream(stream_url=STREAM_URL, parameters={name: "v" * (500 - len(name))})


def test_connect_stream_rejects_empty_parameter_name() -> None:
    """A parameter needs a name."""
    with pytest.raises(ValueError, match="empty name"):
        twiml.connect_stream(stream_url=STREAM_URL, parameters={"": "x"})


def test_apology_says_then_hangs_up() -> None:
    """apology is Response/Say(message) then Hangup."""
    root = _parse(twiml.apology("Sorry & goodbye."))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == "Sorry & goodbye."
    assert root[0].attrib == {}


def test_apology_rejects_empty_and_oversized_messages() -> None:
    """apology refuses an empty message and one too long for inline REST TwiML."""
    with pytest.raises(ValueError, match="empty"):
        twiml.apology("  ")
    with pytest.raises(ValueError, match="4000"):
        twiml.apology("x" * 4000)


def test_dial_structure_and_size() -> None:
    """dial is Response/Dial(number) and fits the 4000-character inline TwiML limit."""
    document = twiml.dial("+14155550100")
    root = _parse(document)
    assert [child.tag for child in root] == ["Dial"]
    assert root[0].text == "+14155550100"
    assert root[0].attrib == {}
    assert len(document) < 4000


def test_dial_to_a_sip_uri_is_dial_sip() -> None:
    """A SIP URI target becomes Response/Dial/Sip(uri), as a contact centre over SIP needs."""
    root = _parse(twiml.dial("sip:fraud-desk@pbx.bank.example;transport=tls"))
    [dial] = list(root)
    [sip] = list(dial)
    assert (sip.tag, sip.text) == ("Sip", "sip:fraud-desk@pbx.bank.example;transport=tls")


@pytest.mark.parametrize(
    "number",
    ["", "14155550100", "+0123", "+1 415 555 0100", "+1" + "2" * 15, "sip:", "sip:a b", "tel:+1"],
)
def test_dial_rejects_non_e164(number: str) -> None:
    """dial refuses anything but an E.164 number or a SIP URI."""
    with pytest.raises(ValueError, match=r"E\.164"):
        twiml.dial(number)


def test_empty_response() -> None:
    """empty is a bare Response element."""
    root = _parse(twiml.empty())
    assert root.tag == "Response"
    assert list(root) == []
    assert root.attrib == {}


def test_connect_stream_with_a_dual_recording_and_a_notice() -> None:
    """RECORDING=dual (issue 21): <Start><Recording channels="dual"> first, then the notice,
    then the stream; the recording's status callbacks go to the given URL."""
    root = _parse(
        twiml.connect_stream(
            stream_url=STREAM_URL,
            parameters={"call_sid": "CA123"},
            recording_callback="https://archer.example/twilio/recording",
            notice="This call is recorded.",
        )
    )
    assert [child.tag for child in root] == ["Start", "Say", "Connect", "Hangup"]
    [recording] = root[0]
    assert recording.tag == "Recording"
    assert recording.attrib == {
        "channels": "dual",
        "track": "both",
        "recordingStatusCallback": "https://archer.example/twilio/recording",
        "recordingStatusCallbackMethod": "POST",
        "recordingStatusCallbackEvent": "in-progress completed absent",
    }
    assert root[1].text == "This call is recorded."
