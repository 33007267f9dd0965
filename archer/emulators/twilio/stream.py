"""One emulated media stream: the caller's side of the socket, its 20 ms clock and the script.

Layer: emulator (trio I/O on one WebSocket to Archer). ``EmulatedCaller``
(``archer.emulators.twilio.caller``) places the call and hands the stream's plan to a
``StreamLeg``, which knows nothing of the caller that made it: what it needs is passed in.

What one ``StreamLeg.connect_and_run()`` does (../shared/reference/twilio-media-streams.md §3.5):

- Dials the TwiML's ``wss://`` URL at the same path on ``archer_url`` over plain ``ws://``,
  signing the ``wss://`` URL with no parameters.
- Sends ``connected`` and ``start``, then one 20 ms ``media`` frame per tick on an absolute
  schedule (a late tick is caught up, never shifted): the script's audio while it is saying
  something, μ-law silence otherwise. The same tick drains the playout buffer, so ``heard`` is
  the caller's real-time timeline, and echoes marks as the drain passes them. Every message is
  built by ``CallerFrames`` (``archer.emulators.twilio.frames``) and numbered under the send
  lock, so the numbers go out in order.
- Checks every message Archer sends as Twilio does
  (``archer.emulators.twilio.server_messages``, written from Twilio's documents); a bad one
  is noted once in ``invalid`` (warning 31951) and ignored, and the call goes on.
- A key pressed is a ``dtmf`` message; with ``in_band_tones`` its tone is also put in the
  caller's audio (``archer.emulators.twilio.keypad_tones``), as a phone sending keys in band does.
- Ends when the script does (``stop``, then close), when Archer closes the socket, or when
  Archer updates the call over REST (Twilio abandons the stream: ``stop``, close).

Rules: the first reason to end wins (``_end``), and ending cancels every task of the leg.
Adding a script step means a case in ``_play``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final

import attrs
import trio
import trio_websocket

from archer.audio.g711 import SILENCE
from archer.emulators.twilio.frames import FRAME_MS, CallerFrames
from archer.emulators.twilio.keypad_tones import keypad_tone
from archer.emulators.twilio.outcome import EndedBy, first_leaf, reason
from archer.emulators.twilio.playout import BYTES_PER_MS, PlayoutBuffer
from archer.emulators.twilio.rest import TwilioRestState
from archer.emulators.twilio.script import (
    CallerScript,
    HangUp,
    Pause,
    Press,
    Say,
    ScriptStep,
    WaitForAgent,
    WaitForAgentSpeech,
    WaitForHangup,
    describe,
    step_kind,
)
from archer.emulators.twilio.server_messages import (
    ServerClear,
    ServerMark,
    ServerMedia,
    ServerMessageError,
    read_server_message,
)
from archer.emulators.twilio.twiml import StreamPlan, dialled_number, local_stream_url
from archer.twilio.signature import SignatureChecker
from archer.websocket_client import open_websocket_client

__all__ = ["MAX_MESSAGE_BYTES", "StreamLeg"]

FRAME_BYTES: Final = BYTES_PER_MS * FRAME_MS
#: Real captures show the first media frame already ~100 ms into the stream (reference §3.2).
FIRST_TIMESTAMP_MS: Final = 100
#: Archer may send its audio in large chunks; Twilio takes "any size" (reference §3.4).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
#: Agent audio after at least this much quiet is announced again as "caller hears agent audio".
_ANNOUNCE_AFTER_QUIET_MS: Final = 500
_SILENT_FRAME: Final = bytes([SILENCE]) * FRAME_BYTES


@attrs.define(kw_only=True)
class StreamLeg:
    """One media stream: its socket, its clock, the playout buffer and the running script."""

    #: Where Archer listens, plain http (the stream is dialled at the same host).
    archer_url: str
    account_sid: str
    auth_token: str = attrs.field(repr=False)
    call_sid: str
    stream_sid: str
    script: CallerScript
    clips: Mapping[str, bytes]
    #: The REST emulator's state: Archer's REST updates of this call end the stream.
    rest: TwilioRestState | None = None
    #: Called with one human-readable line per step and per event.
    tell: Callable[[str], None]
    #: Called with every text message sent on the stream.
    on_send: Callable[[str], None] | None = None
    #: How many REST updates the emulator had before this call; later ones may be ours.
    rest_seen: int
    #: Each key pressed is also its tone in the caller's audio (``keypad_tones``).
    in_band_tones: bool = False
    opened: bool = False
    heard: bytearray = attrs.Factory(bytearray)
    marks_echoed: list[str] = attrs.Factory(list)
    clears_received: int = 0
    media_frames_received: int = 0
    dtmf_sent: str = ""
    invalid: list[str] = attrs.Factory(list)
    transferred_to: str | None = None
    steps_done: int = 0
    ended_by: EndedBy | None = None
    detail: str = ""
    _websocket: trio_websocket.WebSocketConnection | None = None
    _scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    # One writer at a time, so sequence numbers go out in the order they are given.
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)
    _frames: CallerFrames = attrs.field(init=False)
    _playout: PlayoutBuffer = attrs.Factory(PlayoutBuffer)
    _mouth: bytearray = attrs.Factory(bytearray)
    _mouth_empty: trio.Event | None = None
    _ticked: trio.Event = attrs.Factory(trio.Event)
    #: Ticks that played agent audio, and the current run of ticks that played none.
    _agent_ticks: int = 0
    _quiet_ticks: int = 0
    _step: ScriptStep | None = None

    def __attrs_post_init__(self) -> None:
        self._frames = CallerFrames(
            self.stream_sid, self.account_sid, self.call_sid, first_media_ms=FIRST_TIMESTAMP_MS
        )

    async def connect_and_run(self, plan: StreamPlan) -> tuple[EndedBy, str]:
        """Dial the stream, run the call on it, and say how it ended.

        Cancellation: the socket is closed without ``stop``; what the leg recorded so far
        (``heard``, ``marks_echoed``, …) stays as it was.
        """
        signature = SignatureChecker(self.auth_token).sign(plan.url, {})
        try:
            async with open_websocket_client(
                local_stream_url(self.archer_url, plan.url),
                extra_headers=[(b"X-Twilio-Signature", signature.encode())],
                max_message_size=MAX_MESSAGE_BYTES,
            ) as websocket:
                self._websocket = websocket
                self.opened = True
                await self._run(plan)
        except* trio_websocket.ConnectionRejected as group:
            status = first_leaf(group, trio_websocket.ConnectionRejected).status_code
            self._end("rejected", f"31920: the stream upgrade was refused with HTTP {status}")
        except* trio_websocket.HandshakeError as group:
            why = reason(first_leaf(group, trio_websocket.HandshakeError))
            self._end("rejected", f"31920: the stream handshake failed: {why}")
        except* OSError as group:
            why = reason(first_leaf(group, OSError))
            if self.opened:
                self._end("archer", f"31903: the stream connection broke: {why}")
            else:
                self._end("no_stream", f"31902: cannot reach the stream: {why}")
        if self.ended_by == "archer" and plan.after:
            self.detail = f"Archer closed the stream; the TwiML goes on to: {plan.after}"
        assert self.ended_by is not None  # every way out of _run ends the leg
        return self.ended_by, self.detail

    async def _run(self, plan: StreamPlan) -> None:
        await self._send(self._frames.connected)
        await self._send(partial(self._frames.start, plan.parameters))
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_archer)
                nursery.start_soon(self._tick_forever)
                if self.rest is not None:
                    nursery.start_soon(self._watch_rest, self.rest)
                nursery.start_soon(self._run_script)

    # --- ending -------------------------------------------------------------------------

    def _end(self, by: EndedBy, detail: str = "") -> bool:
        """Record how the call ended (the first reason wins) and stop everything."""
        if self.ended_by is not None:
            return False
        self.ended_by, self.detail = by, detail
        if by in ("archer", "twilio_rest") and isinstance(self._step, WaitForHangup):
            self.steps_done += 1  # this is exactly what the step was waiting for
        self._scope.cancel()
        return True

    async def _stop_and_end(self, by: EndedBy, detail: str = "") -> None:
        """Twilio's side ends the stream: ``stop`` goes out, then the socket closes."""
        async with self._send_lock:
            if self.ended_by is not None:
                return
            await self._send_locked(self._frames.stop)
            self._end(by, detail)

    def _archer_closed(self) -> None:
        if self._end("archer", "Archer closed the stream"):
            self.tell("Archer hung up")

    # --- sending --------------------------------------------------------------------------

    async def _send(self, build: Callable[[], str]) -> None:
        async with self._send_lock:
            if self.ended_by is None:
                await self._send_locked(build)

    async def _send_locked(self, build: Callable[[], str]) -> None:
        # Built under the lock: the sequence number a message gets is the order it goes out in.
        assert self._websocket is not None
        text = build()
        if self.on_send is not None:
            self.on_send(text)
        try:
            await self._websocket.send_message(text)
        except trio_websocket.ConnectionClosed:
            self._archer_closed()

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        await self._send(partial(self._frames.mark, name))

    # --- receiving ------------------------------------------------------------------------

    async def _read_archer(self) -> None:
        assert self._websocket is not None
        while True:
            try:
                message = await self._websocket.get_message()
            except trio_websocket.ConnectionClosed:
                self._archer_closed()
                return
            for name in self._receive(message):
                await self._echo_mark(name)

    def _receive(self, message: str | bytes) -> list[str]:
        """Apply one message from Archer; the marks a ``clear`` hands back for echoing."""
        try:
            event = read_server_message(message, stream_sid=self.stream_sid)
        except ServerMessageError as exc:
            problem = f"31951: {exc}"
            if problem not in self.invalid:
                self.invalid.append(problem)
            return []
        match event:
            case ServerMedia(audio=audio):
                self.media_frames_received += 1
                self._playout.append(audio)
            case ServerMark(name=name):
                self._playout.mark(name)
            case ServerClear():
                self.clears_received += 1
                if self._playout.playing:
                    self.tell("Archer clears the agent's audio (barge-in)")
                return self._playout.clear()
        return []

    # --- the 20 ms clock ------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        # An absolute schedule: a late tick is followed by quick ones until the clock is caught
        # up, so the stream never drifts from real time.
        epoch = trio.current_time()
        ticks = 0
        while True:
            ticks += 1
            await trio.sleep_until(epoch + ticks * FRAME_MS / 1000)
            tick = self._playout.tick(FRAME_MS)
            self.heard += tick.heard
            if tick.played:
                quiet_ms = self._quiet_ticks * FRAME_MS
                if self._agent_ticks == 0 or quiet_ms >= _ANNOUNCE_AFTER_QUIET_MS:
                    self.tell("caller hears agent audio")
                self._agent_ticks += 1
                self._quiet_ticks = 0
            else:
                self._quiet_ticks += 1
            for name in tick.echoed:
                await self._echo_mark(name)
            await self._send_media(self._next_caller_frame())
            self._ticked.set()
            self._ticked = trio.Event()

    def _next_caller_frame(self) -> bytes:
        if not self._mouth:
            return _SILENT_FRAME
        frame = bytes(self._mouth[:FRAME_BYTES])
        del self._mouth[:FRAME_BYTES]
        if not self._mouth and self._mouth_empty is not None:
            self._mouth_empty.set()
        return frame + _SILENT_FRAME[len(frame) :]

    async def _send_media(self, ulaw: bytes) -> None:
        payload = base64.b64encode(ulaw).decode("ascii")
        await self._send(partial(self._frames.media, payload))

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait for the first tick after which ``done()`` holds."""
        while not done():
            await self._ticked.wait()

    # --- REST -----------------------------------------------------------------------------

    async def _watch_rest(self, rest: TwilioRestState) -> None:
        """Archer updating this call over REST ends the stream, as on Twilio (reference §5.2)."""
        seen = self.rest_seen
        while True:
            updates = await rest.wait_for_updates(seen + 1)
            for update in updates[seen:]:
                if update.call_sid == self.call_sid:
                    await self._rest_update(update.fields)
                    return
            seen = len(updates)

    async def _rest_update(self, fields: Mapping[str, str]) -> None:
        dialled = dialled_number(fields.get("Twiml", ""))
        if dialled is not None:
            self.transferred_to = dialled
            line = f"transferred to {dialled}"
        elif fields.get("Status") in ("completed", "canceled"):
            line = "Archer hung up over REST"
        else:
            line = "Archer moved the call on over REST"
        await self._stop_and_end("twilio_rest", line)
        self.tell(line)

    # --- the script -----------------------------------------------------------------------

    async def _run_script(self) -> None:
        for index, step in enumerate(self.script.steps, 1):
            self._step = step
            self.tell(describe(step))
            if isinstance(step, HangUp):
                self.steps_done += 1
                await self._stop_and_end("caller", "the caller hung up")
                return
            timeout = (
                step.timeout
                if isinstance(step, WaitForAgent | WaitForAgentSpeech | WaitForHangup)
                else math.inf
            )
            with trio.move_on_after(timeout) as deadline:
                await self._play(step)
            if deadline.cancelled_caught:
                detail = f"step {index} ({step_kind(step)}) timed out after {timeout:g} s"
                self.tell(f"{detail}; caller hangs up")
                await self._stop_and_end("caller", detail)
                return
            self.steps_done += 1
        self._step = None
        self.tell("caller hangs up")
        await self._stop_and_end("caller", "the script is done; the caller hung up")

    async def _play(self, step: ScriptStep) -> None:
        match step:
            case Say(clip=clip):
                self._mouth_empty = spoken = trio.Event()
                self._mouth = bytearray(self.clips[clip])
                if not self._mouth:
                    spoken.set()
                await spoken.wait()
            case Press(digits=digits, gap_ms=gap_ms):
                for position, digit in enumerate(digits):
                    if position:
                        await trio.sleep(gap_ms / 1000)
                    self.dtmf_sent += digit
                    if self.in_band_tones:
                        # The tone goes out with the next ticks' media, straddling frames.
                        self._mouth += keypad_tone(digit)
                    await self._send(partial(self._frames.dtmf, digit))
            case Pause(seconds=seconds):
                await trio.sleep(seconds)
            case WaitForAgent(quiet_ms=quiet_ms):
                heard_before = self._agent_ticks
                quiet_ticks = math.ceil(quiet_ms / FRAME_MS)
                await self._until(
                    lambda: self._agent_ticks > heard_before and self._quiet_ticks >= quiet_ticks
                )
            case WaitForAgentSpeech():
                heard_before = self._agent_ticks
                await self._until(lambda: self._agent_ticks > heard_before)
            case WaitForHangup():
                await trio.sleep_forever()  # ended by _end, which cancels the script
            case HangUp():
                raise AssertionError("hang_up is handled by the script runner")
