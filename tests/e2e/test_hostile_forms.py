"""Issue 19: signed but hostile Twilio input gets a 4xx (or valid TwiML), never a 5xx, and
nothing is written.

Table-driven over the three routes Twilio drives: the voice webhook, the status callback and
the media stream's ``start``. Every request is signed with the real auth token, exactly as a
replaying or compromised sender could; real hypercorn, real websockets, a real database
(SQLite). The upgrade's signature covers its query string too, on the route and on the
dedicated media listener.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import attrs
import h11
import pytest
import sqlalchemy as sa
import trio
import trio.lowlevel

from archer.db.tables import calls, customers, pin_failures, tool_calls
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer, TwilioCaller
from tests.e2e.test_call import System, running_system

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

GOOD_SID = "CA" + "ab" * 16
#: Field overrides that must be refused (None removes the field).
HOSTILE_SIDS: dict[str, str | None] = {
    "over-long CallSid": "CA" + "a" * 500,
    "NUL in CallSid": "CA" + "a" * 31 + "\x00",
    "unicode CallSid": "CA" + "é" * 32,
    "fullwidth digits in CallSid": "CA" + "１" * 32,
    "not a CallSid": "XX" + "a" * 32,
    "empty CallSid": "",
    "missing CallSid": None,
}
HOSTILE_VOICE: dict[str, dict[str, str | None]] = {
    **{name: {"CallSid": value} for name, value in HOSTILE_SIDS.items()},
    "over-long From": {"From": "+1" + "5" * 600},
    "NUL in From": {"From": "+1555\x000101"},
    "newline in To": {"To": "+15555550000\r\nX-Injected: 1"},
}
HOSTILE_STATUS: dict[str, dict[str, str | None]] = {
    **{name: {"CallSid": value} for name, value in HOSTILE_SIDS.items()},
    "20-digit CallDuration": {"CallDuration": "9" * 20},
    "negative CallDuration": {"CallDuration": "-5"},
    "fractional CallDuration": {"CallDuration": "1.5"},
    "superscript CallDuration": {"CallDuration": "²"},
    "non-numeric CallDuration": {"CallDuration": "ten"},
    "CallDuration over a day": {"CallDuration": "86401"},
    "missing CallStatus": {"CallStatus": None},
    "over-long CallStatus": {"CallStatus": "completed" * 100},
    "NUL in CallStatus": {"CallStatus": "completed\x00"},
    "unknown CallStatus": {"CallStatus": "exploded"},
}
#: ``start`` values that must be refused: (callSid, streamSid, token) overrides.
HOSTILE_START: dict[str, dict[str, str]] = {
    "over-long callSid": {"callSid": "CA" + "a" * 500},
    "NUL in callSid": {"callSid": "CA" + "a" * 31 + "\x00"},
    "unicode callSid": {"callSid": "CA" + "ü" * 32},
    "over-long streamSid": {"streamSid": "MZ" + "1" * 5000},
    "NUL in streamSid": {"streamSid": "MZ" + "1" * 31 + "\x00"},
    "huge token": {"token": "t" * 100_000},
    "NUL in token": {"token": "abc\x00def"},
    "unicode token": {"token": "ţøķęñ" * 8},
}


def fields_with(base: dict[str, str], overrides: dict[str, str | None]) -> dict[str, str]:
    fields = dict(base)
    for name, value in overrides.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return fields


def row_counts(system: System) -> tuple[int, ...]:
    with system.store.engine.connect() as conn:
        return tuple(
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (calls, customers, tool_calls, pin_failures)
        )


def assert_4xx_or_twiml(status: int, body: str, case: str) -> None:
    assert status < 500, f"{case}: {status} {body[:200]}"
    if status == 200:
        assert ET.fromstring(body).tag == "Response", case
    else:
        assert 400 <= status < 500, case


async def listen(peer: AgentPeer) -> None:
    await peer.accept_session()


async def test_hostile_webhook_fields_are_refused_and_write_nothing(database_url: str) -> None:
    """Every hostile voice and status field: 4xx, no 5xx, not a row written."""
    async with running_system(database_url, listen) as system:
        caller = attrs.evolve(system.caller, call_sid=GOOD_SID)
        before = await trio.to_thread.run_sync(row_counts, system)
        cases = [("/twilio/voice", name, o) for name, o in HOSTILE_VOICE.items()] + [
            ("/twilio/status", name, o) for name, o in HOSTILE_STATUS.items()
        ]
        status_fields = {**caller.webhook_fields(), "CallStatus": "completed", "CallDuration": "7"}
        for path, name, overrides in cases:
            base = caller.webhook_fields() if path == "/twilio/voice" else status_fields
            answer = await caller.post(path, fields_with(base, overrides))
            assert_4xx_or_twiml(answer.status, answer.text, name)
            assert answer.status == 400, f"{name}: {answer.status}"
            assert "\x00" not in answer.text
        assert await trio.to_thread.run_sync(row_counts, system) == before
        # The same routes still take Twilio's real requests.
        answer = await caller.post("/twilio/voice", caller.webhook_fields())
        assert_4xx_or_twiml(answer.status, answer.text, "a good webhook")
        assert "<Stream" in answer.text
        answer = await caller.post("/twilio/status", status_fields)
        assert answer.status == 200
        stored = await system.store.load_call(GOOD_SID)
        assert stored is not None
        assert (stored.twilio_status, stored.twilio_duration_s) == ("completed", 7)


async def test_odd_but_real_caller_ids_get_valid_twiml(database_url: str) -> None:
    """What Twilio really sends for a withheld, app or SIP caller is answered with TwiML."""
    async with running_system(database_url, listen) as system:
        for n, caller_id in enumerate(
            ["anonymous", "+", "client:José", "sip:bob@example.com", "", "+81３３"]
        ):
            caller = attrs.evolve(system.caller, call_sid=f"CA{n:032x}", from_number=caller_id)
            answer = await caller.post("/twilio/voice", caller.webhook_fields())
            assert_4xx_or_twiml(answer.status, answer.text, caller_id)
            assert answer.status == 200
            assert "<Stream" in answer.text


async def test_hostile_start_values_are_refused_and_write_nothing(database_url: str) -> None:
    """A stream whose ``start`` carries a hostile SID or token is closed; the call's row stays
    as the webhook left it and its token unspent; the agent never hears of it."""
    async with running_system(database_url, listen) as system:
        await system.caller.dial()
        for n, (name, overrides) in enumerate(HOSTILE_START.items()):
            hostile = attrs.evolve(
                system.caller,
                call_sid=overrides.get("callSid", system.caller.call_sid),
                stream_sid=overrides.get("streamSid", f"MZ{n:032x}"),
                parameters={**system.caller.parameters, "token": overrides.get("token", "")}
                if "token" in overrides
                else system.caller.parameters,
                outbound=[],
                websocket=None,
                closed=trio.Event(),
            )
            async with trio.open_nursery() as nursery:
                await connect_unchecked(hostile, nursery)
                with trio.fail_after(STEP_TIMEOUT):
                    await hostile.closed.wait()
            assert system.agent.peers == [], name
        stored = await system.store.load_call(system.caller.call_sid)
        assert stored is not None
        assert (stored.record.status, stored.record.stream_sid) == ("initiated", None)
        # The real stream still claims its call: nothing hostile spent the token.
        async with trio.open_nursery() as nursery:
            await system.caller.connect(nursery)
            await system.peer()
            await system.caller.stop()
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()


async def connect_unchecked(caller: TwilioCaller, nursery: trio.Nursery) -> None:
    """``TwilioCaller.connect`` without its own schema check (the values are hostile on purpose)."""
    await nursery.start(caller._run_socket, None)
    assert caller.websocket is not None
    connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "streamSid": caller.stream_sid,
            "accountSid": caller.account_sid,
            "callSid": caller.call_sid,
            "tracks": ["inbound"],
            "customParameters": caller.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": caller.stream_sid,
    }
    for frame in (connected, start):
        await caller.websocket.send_message(json.dumps(frame))


@pytest.mark.parametrize("media_listener", [False, True], ids=["route", "media_listener"])
async def test_a_query_string_appended_to_a_signed_upgrade_is_refused(
    database_url: str, media_listener: bool
) -> None:
    """The upgrade's signature covers the full URL: a query added to a signed URL gets 403."""
    async with running_system(database_url, listen, media_listener=media_listener) as system:
        await system.caller.dial()
        signed_bare = system.caller.signer.sign(system.caller.stream_url, {})
        tampered = attrs.evolve(
            system.caller,
            stream_url=system.caller.stream_url + "?debug=1",
            websocket=None,
            closed=trio.Event(),
        )
        async with trio.open_nursery() as nursery:
            await tampered.connect(nursery, signature=signed_bare)
        assert tampered.rejected_status == 403
        # Signed over the URL with its query (as Twilio would sign it), the same upgrade passes.
        honest = attrs.evolve(tampered, closed=trio.Event(), rejected_status=None)
        async with trio.open_nursery() as nursery:
            await honest.connect(nursery)
            await system.peer()
            await honest.stop()
            await system.wait_for_record(lambda s: s.record.end_reason is not None)
            nursery.cancel_scope.cancel()
        assert honest.rejected_status is None


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/status"])
async def test_an_oversized_chunked_body_is_answered_early(database_url: str, path: str) -> None:
    """A 20 MB chunked body (no Content-Length to refuse up front) gets 413 once it passes the
    64 KB webhook limit, long before the sender is done; nothing is written."""
    async with running_system(database_url, listen) as system:
        before = await trio.to_thread.run_sync(row_counts, system)
        status, sent = await post_chunked(system.caller.archer_url, path, total=20 * 1024 * 1024)
        assert status == 413
        assert sent < 1024 * 1024, f"answered only after {sent} bytes"
        assert await trio.to_thread.run_sync(row_counts, system) == before


async def post_chunked(base_url: str, path: str, *, total: int) -> tuple[int, int]:
    """POST ``total`` bytes of form body in 64 KB chunks; the status and the bytes sent by the
    time the response arrived (the sender stops as soon as it does)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = h11.Connection(h11.CLIENT)
    answered: list[int] = []
    sent = 0
    with trio.fail_after(STEP_TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream, trio.open_nursery() as nursery:

            async def read_status() -> None:
                while True:
                    event = connection.next_event()
                    if isinstance(event, h11.Response):
                        answered.append(event.status_code)
                        nursery.cancel_scope.cancel()
                        return
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        connection.receive_data(data)

            nursery.start_soon(read_status)
            request = h11.Request(
                method="POST",
                target=path,
                headers=[
                    ("Host", host),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Transfer-Encoding", "chunked"),
                ],
            )
            await stream.send_all(connection.send(request))
            chunk = b"a=" + b"b" * (64 * 1024 - 2)
            try:
                while sent < total:
                    await stream.send_all(connection.send(h11.Data(data=chunk)))
                    sent += len(chunk)
                    await trio.lowlevel.checkpoint()  # let the answer in as it comes
            except trio.BrokenResourceError:
                pass  # the server closed the connection after answering
            await trio.sleep_forever()  # until the answer cancels the nursery
    assert answered, "no answer at all"
    return answered[0], sent
