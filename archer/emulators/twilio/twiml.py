"""Reading TwiML as Twilio does: the voice webhook's answer, and TwiML sent over REST.

Layer: emulator, pure (no trio, no I/O). ``read_voice_answer`` turns Archer's answer to the
voice webhook into where to stream (``StreamPlan``) or why the call ended there (``NoStream``),
with the error codes Twilio would log (../shared/reference/twilio-media-streams.md §1.3, §2.2,
§3.5 item 2). Used by the Twilio emulator and the bench's callers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import attrs

from archer.emulators.http import HttpResponse
from archer.emulators.twilio.outcome import EndedBy

__all__ = ["NoStream", "StreamPlan", "dialled_number", "local_stream_url", "read_voice_answer"]

#: A ``<Parameter>``'s name and value together must be shorter than this.
MAX_PARAMETER_CHARS: Final = 500


@attrs.frozen
class StreamPlan:
    """Where the TwiML says to stream: the ``wss://`` URL (query dropped) and parameters."""

    url: str
    parameters: dict[str, str]
    #: The verbs after ``</Connect>``, which Twilio runs once the stream ends.
    after: str


@attrs.frozen
class NoStream:
    """The call ended before any stream: how, and why."""

    ended_by: EndedBy
    detail: str


def read_voice_answer(answer: HttpResponse) -> StreamPlan | NoStream:
    """Interpret Archer's webhook answer as Twilio would (reference §1.3, §2.2, §3.5 item 2)."""
    if answer.status != 200:
        return NoStream("rejected", f"11200: the voice webhook answered HTTP {answer.status}")
    content_type = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/xml", "application/xml"):
        return NoStream("rejected", f"12300: TwiML came with Content-Type {content_type!r}")
    try:
        root = ET.fromstring(answer.body)
    except ET.ParseError as exc:
        return NoStream("rejected", f"12100: the TwiML is not XML: {exc}")
    if root.tag != "Response":
        return NoStream("rejected", f"12102: the TwiML's root is <{root.tag}>, not <Response>")
    verbs = list(root)
    connect_at = next(
        (
            i
            for i, verb in enumerate(verbs)
            if verb.tag == "Connect" and verb.find("Stream") is not None
        ),
        None,
    )
    if connect_at is None:
        return NoStream("no_stream", f"no <Connect><Stream> in the TwiML: {_verbs(verbs)}")
    stream = verbs[connect_at].find("Stream")
    assert stream is not None  # found just above
    parts = urlsplit(stream.attrib.get("url", ""))
    if parts.scheme != "wss" or not parts.hostname:
        return NoStream(
            "no_stream", f"31922: stream URL {stream.attrib.get('url')!r} is not wss://"
        )
    if stream.attrib.get("track", "inbound_track") != "inbound_track":
        return NoStream("no_stream", "31941: <Connect><Stream> takes inbound_track only")
    parameters: dict[str, str] = {}
    for parameter in stream.iter("Parameter"):
        name, value = parameter.attrib.get("name", ""), parameter.attrib.get("value", "")
        if len(name) + len(value) >= MAX_PARAMETER_CHARS:
            return NoStream(
                "no_stream", f"<Parameter> {name[:40]!r} is {MAX_PARAMETER_CHARS}+ chars"
            )
        parameters[name] = value
    # Twilio drops the query string when dialing (reference §2.2), and signs what it dials.
    url = urlunsplit(("wss", parts.netloc, parts.path or "/", "", ""))
    return StreamPlan(url, parameters, after=_verbs(verbs[connect_at + 1 :]))


def _verbs(verbs: list[ET.Element]) -> str:
    described = [f'{verb.tag} "{verb.text.strip()}"' if verb.text else verb.tag for verb in verbs]
    return ", ".join(described) or "nothing"


def local_stream_url(archer_url: str, stream_url: str) -> str:
    """The stream URL's path on Archer's local address, ``ws://`` for ``http://``."""
    local = urlsplit(archer_url)
    scheme = "wss" if local.scheme == "https" else "ws"
    return urlunsplit((scheme, local.netloc, urlsplit(stream_url).path or "/", "", ""))


def dialled_number(twiml: str) -> str | None:
    """The number of a ``<Dial>`` in REST TwiML (text or ``<Number>``), if there is one."""
    if not twiml:
        return None
    try:
        dial = ET.fromstring(twiml).find("Dial")
    except ET.ParseError:
        return None
    if dial is None:
        return None
    number = dial.find("Number")
    return ((number.text if number is not None else dial.text) or "").strip() or None
