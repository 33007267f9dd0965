"""The bench's callers and agent: Twilio and Cartesia traffic at full duplex, every frame tagged.

Layer: bench (trio I/O over loopback). Each side speaks its peer's real wire format: a caller
posts the signed voice webhook, dials the TwiML's stream with a signed upgrade and sends
``connected``, ``start`` and one ``media`` frame every 20 ms; the agent answers
``session_create`` with ``session_ready`` and sends one 20 ms ``audio_output`` every 20 ms
(speaking pace, the whole call long, the heaviest load a call can be).

Why not the product emulators: they model a caller's ear and an agent's VAD per frame, which
costs more than the bridge being measured. These peers do only what the measurement needs, on
the lean ``archer.websocket_stream``, so one core of load drives dozens of calls. What a caller
sends is still built by the emulator's ``CallerFrames`` (``archer.emulators.twilio.frames``),
the one builder of Twilio's inbound messages.

Tags: each frame's first 16 bytes are ``(call, sequence, send time)``. Archer passes μ-law
through untouched (``CARTESIA_AUDIO_FORMAT=mulaw_8000``), so the far end reads the tag back and
the frame's transit time is ``now - send time`` on one clock (both ends live in this process).
Frames sent before ``Window.start`` or after ``Window.end`` are counted but not timed, and so
are all but the newest frame of a batched agent message (their extra wait is the batch's).
"""

from __future__ import annotations

import binascii
import json
import secrets
import struct
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import attrs
import trio

from archer.audio.g711 import SILENCE
from archer.cartesia import managed
from archer.emulators.http import post_form
from archer.emulators.twilio.frames import CallerFrames
from archer.emulators.twilio.outcome import new_call_sid, new_stream_sid
from archer.emulators.twilio.twiml import NoStream, local_stream_url, read_voice_answer
from archer.twilio.signature import SignatureChecker, webhook_url
from archer.websocket_stream import (
    WebSocketClosed,
    WebSocketStream,
    accept_websocket,
    connect_websocket,
)

FRAME_SECONDS: Final = 0.02
FRAME_BYTES: Final = 160
_TAG = struct.Struct("<IId")
_FILLER: Final = bytes([SILENCE]) * (FRAME_BYTES - _TAG.size)

Clock = Callable[[], float]


def tagged_frame(call: int, sequence: int, sent_at: float) -> str:
    """A 20 ms μ-law frame, base64, whose first bytes say who sent it and when."""
    return binascii.b2a_base64(_TAG.pack(call, sequence, sent_at) + _FILLER, newline=False).decode()


def read_tags(payload: str) -> list[tuple[int, float]]:
    """``(sequence, send time)`` of each tagged 20 ms frame in ``payload`` (base64 μ-law).

    A message may carry several frames (Archer's agent-leg batching joins two); anything that
    is not a whole number of tagged frames yields none.
    """
    try:
        audio = binascii.a2b_base64(payload)
    except binascii.Error:
        return []
    if not audio or len(audio) % FRAME_BYTES:
        return []
    tags = []
    for offset in range(0, len(audio), FRAME_BYTES):
        _, sequence, sent_at = _TAG.unpack_from(audio, offset)
        tags.append((sequence, sent_at))
    return tags


@attrs.define
class Window:
    """When frames count: only those sent inside ``[start, end)`` are timed."""

    start: float = float("inf")
    end: float = float("inf")

    def __contains__(self, sent_at: float) -> bool:
        return self.start <= sent_at < self.end


@attrs.define
class Direction:
    """One direction of one call: frames sent and received, and transit times in the window."""

    sent: int = 0
    received: int = 0
    latencies: list[float] = attrs.Factory(list)

    def arrived(self, sent_at: float, now: float, window: Window, *, timed: bool = True) -> None:
        self.received += 1
        if timed and sent_at in window:
            self.latencies.append(now - sent_at)


@attrs.define
class CallStats:
    """What one bench call measured."""

    index: int
    call_sid: str
    to_agent: Direction = attrs.Factory(Direction)
    to_caller: Direction = attrs.Factory(Direction)
    #: Webhook posted → the agent received ``session_create`` (the bench agent answers at once).
    setup_seconds: float | None = None
    webhook_seconds: float | None = None
    error: str | None = None
    #: When the voice webhook was posted (on the bench's clock).
    posted_at: float = 0.0


@attrs.define
class BenchTarget:
    """The server under test and the credentials it expects."""

    http_url: str
    public_base_url: str
    account_sid: str
    auth_token: str = attrs.field(repr=False)
    #: Where media streams go when not to ``http_url`` (Archer's ``MEDIA_PORT``).
    media_url: str | None = None


class BenchAgent:
    """A Cartesia Managed Agents endpoint that answers every session and talks at pace.

    ``calls`` maps a session's ``call_sid`` (from its dynamic variables; Archer and the floor
    both send it) to the caller's ``CallStats``. A session for no known call is served the same
    way but counted nowhere.
    """

    def __init__(self, calls: dict[str, CallStats], window: Window, clock: Clock) -> None:
        self.calls = calls
        self.window = window
        self.clock = clock
        self.sessions = 0
        #: Set at the end of a step: the step's sessions stop sending, so in-flight frames can
        #: land. Each step gives the agent a new one; a session keeps the one it started with.
        self.quiet = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free loopback port (reported through ``task_status``) until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        accepted = await accept_websocket(stream)
        if accepted is None:
            return
        _, websocket = accepted
        quiet = self.quiet
        try:
            create = json.loads(await websocket.receive())
            variables = create.get("dynamic_variables") or {}
            stats = self.calls.get(variables.get("call_sid", ""))
            if stats is not None:
                stats.setup_seconds = self.clock() - stats.posted_at
                index = stats.index
            else:
                index = self.sessions
            self.sessions += 1
            await websocket.send(
                managed.session_ready(
                    call_id=f"bench_{secrets.token_hex(6)}",
                    agent_id="agent_bench",
                    agent_version_id="v1",
                    input_format=create["audio"]["input_format"],
                    output_delivery="speaking_pace",
                )
            )
            direction = stats.to_caller if stats is not None else Direction()
            received = stats.to_agent if stats is not None else Direction()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._talk, websocket, index, direction, quiet)
                await self._listen(websocket, received)
                nursery.cancel_scope.cancel()
        except* WebSocketClosed:
            pass  # the server hung up: the call is over
        finally:
            await websocket.aclose()

    async def _talk(
        self, websocket: WebSocketStream, index: int, direction: Direction, quiet: trio.Event
    ) -> None:
        """Send one tagged 20 ms frame per tick on an absolute schedule until ``quiet``."""
        clock = self.clock
        next_at = trio.current_time()
        while not quiet.is_set():
            now = clock()
            await websocket.send(managed.audio_output(tagged_frame(index, direction.sent, now)))
            direction.sent += 1
            next_at += FRAME_SECONDS
            await trio.sleep_until(next_at)

    async def _listen(self, websocket: WebSocketStream, direction: Direction) -> None:
        clock, window = self.clock, self.window
        while True:
            message = await websocket.receive()
            if not isinstance(message, str) or '"audio_input"' not in message:
                continue  # dtmf, tool results: none in the bench
            now = clock()
            tags = read_tags(json.loads(message)["audio"])
            for index, (_, sent_at) in enumerate(tags):
                # In a batch, only the newest frame is timed: the older ones waited for it by
                # design (AGENT_AUDIO_BATCH_MS), which is not time the bridge added.
                timed = index == len(tags) - 1
                direction.arrived(sent_at, now, window, timed=timed)


async def run_caller(
    target: BenchTarget,
    stats: CallStats,
    window: Window,
    clock: Clock,
    *,
    hang_up: trio.Event,
    quiet: trio.Event,
) -> None:
    """Place one call, stream tagged frames until ``quiet``, hang up at ``hang_up``.

    Whatever goes wrong is recorded in ``stats.error``; this never raises ``Exception``.
    """
    signer = SignatureChecker(target.auth_token)
    fields = {
        "AccountSid": target.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": stats.call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": f"+1555{stats.index:07d}",
        "To": "+15555550000",
    }
    stats.posted_at = clock()
    try:
        answer = await post_form(
            target.http_url + "/twilio/voice",
            fields,
            headers={
                "X-Twilio-Signature": signer.sign(
                    webhook_url(target.public_base_url, "/twilio/voice"), fields
                )
            },
        )
        stats.webhook_seconds = clock() - stats.posted_at
        plan = read_voice_answer(answer)
        if isinstance(plan, NoStream):
            stats.error = f"{plan.ended_by}: {plan.detail}"
            return
        url = urlsplit(local_stream_url(target.media_url or target.http_url, plan.url))
        async with connect_websocket(
            url.hostname or "127.0.0.1",
            url.port or 80,
            url.path,
            headers=[("X-Twilio-Signature", signer.sign(plan.url, {}))],
        ) as websocket:
            # One task sends on this stream (this one, then _speak, then this one again), so
            # the builder numbers the messages in the order they go out.
            frames = CallerFrames(new_stream_sid(), target.account_sid, stats.call_sid)
            await websocket.send(frames.connected())
            await websocket.send(frames.start(plan.parameters))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_listen_as_caller, websocket, stats.to_caller, window, clock)
                await _speak(websocket, stats, frames, clock, quiet)
                await hang_up.wait()
                await websocket.send(frames.stop())
                nursery.cancel_scope.cancel()
    except* (OSError, trio.TooSlowError, WebSocketClosed, ValueError, KeyError) as group:
        exc = group.exceptions[0]
        stats.error = f"{type(exc).__name__}: {exc}"


async def _speak(
    websocket: WebSocketStream,
    stats: CallStats,
    frames: CallerFrames,
    clock: Clock,
    quiet: trio.Event,
) -> None:
    direction = stats.to_agent
    next_at = trio.current_time()
    while not quiet.is_set():
        sequence = direction.sent
        await websocket.send(frames.media(tagged_frame(stats.index, sequence, clock())))
        direction.sent += 1
        next_at += FRAME_SECONDS
        await trio.sleep_until(next_at)


async def _listen_as_caller(
    websocket: WebSocketStream, direction: Direction, window: Window, clock: Clock
) -> None:
    while True:
        message = await websocket.receive()
        if not isinstance(message, str) or '"media"' not in message:
            continue  # marks and clears
        now = clock()
        for _, sent_at in read_tags(json.loads(message)["media"]["payload"]):
            direction.arrived(sent_at, now, window)


def new_call(index: int) -> CallStats:
    return CallStats(index=index, call_sid=new_call_sid())
