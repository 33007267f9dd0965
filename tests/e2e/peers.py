"""Archer's two peers over real loopback sockets, for the end-to-end tests.

``AgentServer`` is a small Cartesia Managed Agents server (trio-websocket) whose behaviour per
connection is a test-supplied coroutine; ``TwilioCaller`` plays Twilio: it posts the signed voice
webhook, reads the TwiML, dials the stream with a signed upgrade and talks media-stream JSON.
Both validate every message Archer sends against the published AsyncAPI schemas and keep what
failed in ``invalid`` (tests assert it is empty).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import jsonschema
import trio
import trio_websocket

from archer.cartesia import managed
from archer.emulators.http import HttpResponse, post_form
from archer.emulators.twilio.frames import CallerFrames
from archer.twilio.signature import SignatureChecker, webhook_url
from archer.websocket_client import open_websocket_client
from tests.contract.schemas import (
    validate_cartesia_client_message,
    validate_twilio_inbound,
    validate_twilio_outbound,
)

#: How long any one expected step of an end-to-end call may take on a loaded CI machine.
STEP_TIMEOUT = 10.0

AgentBehaviour = Callable[["AgentPeer"], Awaitable[None]]


@attrs.define
class AgentPeer:
    """One connection to the test agent, as the agent sees it."""

    websocket: trio_websocket.WebSocketConnection
    received: list[managed.ClientEvent] = attrs.Factory(list)
    #: Every message as it came over the socket (searched for secrets, issue 21).
    raw: list[str] = attrs.Factory(list)
    invalid: list[str] = attrs.Factory(list)
    closed: trio.Event = attrs.Factory(trio.Event)
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def read_forever(self) -> None:
        try:
            while True:
                message = await self.websocket.get_message()
                assert isinstance(message, str)
                self.raw.append(message)
                try:
                    validate_cartesia_client_message(message)
                except (jsonschema.ValidationError, AssertionError) as exc:
                    self.invalid.append(f"{message[:120]}: {exc}")
                self.received.append(managed.parse_client_event(message))
                self._arrived.set()
                self._arrived = trio.Event()
        except trio_websocket.ConnectionClosed:
            self.closed.set()

    async def send(self, message: str) -> None:
        await self.websocket.send_message(message)

    async def wait_for(self, predicate: Callable[[list[managed.ClientEvent]], bool]) -> None:
        with trio.fail_after(STEP_TIMEOUT):
            while not predicate(self.received):
                await self._arrived.wait()

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.received if isinstance(event, kind)]

    async def accept_session(self) -> managed.SessionCreate:
        """Wait for ``session_create`` and answer ``session_ready``."""
        await self.wait_for(lambda events: bool(events))
        first = self.received[0]
        assert isinstance(first, managed.SessionCreate), first
        await self.send(
            managed.session_ready(
                call_id="ac_e2eCall0001",
                agent_id="agent_e2e",
                agent_version_id="av_e2e0001",
                input_format=first.input_format,
                output_delivery=first.output_delivery or "speaking_pace",
            )
        )
        return first


@attrs.define
class AgentServer:
    """A Managed Agents endpoint on 127.0.0.1 running ``behaviour`` for each connection."""

    behaviour: AgentBehaviour
    api_key: str = "sk_car_e2e_test_key"
    peers: list[AgentPeer] = attrs.Factory(list)
    rejected: list[str] = attrs.Factory(list)
    port: int = 0
    _connected: trio.Event = attrs.Factory(trio.Event)

    async def first_peer(self) -> AgentPeer:
        """The first connection's peer, once Archer has connected."""
        with trio.fail_after(STEP_TIMEOUT):
            await self._connected.wait()
        return self.peers[0]

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, self._handle, "127.0.0.1", 0, None
            )
            self.port = server.port
            task_status.started(self.port)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        if headers.get("x-api-key") != self.api_key:
            self.rejected.append("bad api key")
            await request.reject(401, body=b"unauthorized")
            return
        if not request.path.startswith("/v1/agents/websocket/"):
            self.rejected.append(request.path)
            await request.reject(404)
            return
        websocket = await request.accept()
        peer = AgentPeer(websocket)
        self.peers.append(peer)
        self._connected.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.read_forever)
            await self.behaviour(peer)
            await peer.closed.wait()


@attrs.define
class TwilioCaller:
    """Plays Twilio for one call against an Archer at ``archer_url`` (plain http on loopback)."""

    archer_url: str
    public_base_url: str
    auth_token: str
    #: Where the media stream is dialled when not at ``archer_url`` (Archer's MEDIA_PORT).
    media_url: str | None = None
    call_sid: str = "CA" + "e2e0" * 8
    stream_sid: str = "MZ" + "e2e1" * 8
    account_sid: str = "AC" + "e2e2" * 8
    from_number: str = "+15555550101"
    to_number: str = "+15555550000"
    stream_url: str = ""
    parameters: dict[str, str] = attrs.Factory(dict)
    outbound: list[dict[str, Any]] = attrs.Factory(list)
    invalid: list[str] = attrs.Factory(list)
    websocket: trio_websocket.WebSocketConnection | None = None
    rejected_status: int | None = None
    #: Set when the stream socket is gone (Archer closed it, or it was refused or dropped).
    closed: trio.Event = attrs.Factory(trio.Event)
    #: Numbers and builds what the caller sends; made when the stream is dialled.
    _frames: CallerFrames | None = None
    _arrived: trio.Event = attrs.Factory(trio.Event)

    @property
    def signer(self) -> SignatureChecker:
        return SignatureChecker(self.auth_token)

    def webhook_fields(self) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": self.from_number,
            "To": self.to_number,
            "Caller": self.from_number,
            "Called": self.to_number,
        }

    async def post(self, path: str, fields: dict[str, str], *, sign: bool = True) -> HttpResponse:
        headers = {}
        if sign:
            headers["X-Twilio-Signature"] = self.signer.sign(
                webhook_url(self.public_base_url, path), fields
            )
        return await post_form(self.archer_url + path, fields, headers=headers)

    async def dial(self) -> HttpResponse:
        """Post the voice webhook and read the stream URL and parameters from the TwiML."""
        response = await self.post("/twilio/voice", self.webhook_fields())
        if response.status == 200 and "<Stream" in response.text:
            stream = ET.fromstring(response.text).find("./Connect/Stream")
            assert stream is not None
            self.stream_url = stream.attrib["url"]
            self.parameters = {p.attrib["name"]: p.attrib["value"] for p in stream}
        return response

    async def connect(self, nursery: trio.Nursery, *, signature: str | None = None) -> None:
        """Dial the media stream (signed) and, if accepted, send ``connected`` and ``start``."""
        await nursery.start(self._run_socket, signature)
        if self.websocket is None:
            return  # the upgrade was refused; ``rejected_status`` says how
        self._frames = CallerFrames(
            self.stream_sid, self.account_sid, self.call_sid, first_media_ms=20
        )
        await self.send(self._frames.connected())
        await self.send(self._frames.start(self.parameters))

    async def _run_socket(
        self,
        signature: str | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        path = self.stream_url.split("/", 3)[3]
        url = f"{(self.media_url or self.archer_url).replace('http', 'ws', 1)}/{path}"
        signed = signature if signature is not None else self.signer.sign(self.stream_url, {})
        try:
            async with open_websocket_client(
                url,
                extra_headers=[(b"X-Twilio-Signature", signed.encode())],
                max_message_size=4 * 1024 * 1024,
            ) as websocket:
                self.websocket = websocket
                task_status.started()
                await self._read_forever()
        except* trio_websocket.ConnectionRejected as group:
            rejection = group.exceptions[0]
            assert isinstance(rejection, trio_websocket.ConnectionRejected)
            self.rejected_status = rejection.status_code
            task_status.started()
        finally:
            self.closed.set()

    @property
    def frames(self) -> CallerFrames:
        """The stream's frame builder (``connect`` makes it)."""
        assert self._frames is not None, "connect() first"
        return self._frames

    async def send(self, text: str) -> None:
        """Send one message built by ``frames`` (numbered as it was built)."""
        assert self.websocket is not None
        validate_twilio_inbound(text)  # the caller itself must speak valid Twilio
        await self.websocket.send_message(text)

    async def speak(self, payload: str) -> None:
        await self.send(self.frames.media(payload))

    async def press(self, digit: str) -> None:
        await self.send(self.frames.dtmf(digit))

    async def echo_mark(self, name: str) -> None:
        """Twilio's echo: the audio before mark ``name`` has played (or was cleared)."""
        await self.send(self.frames.mark(name))

    def marks(self) -> list[str]:
        return [frame["mark"]["name"] for frame in self.outbound if frame["event"] == "mark"]

    async def stop(self) -> None:
        await self.send(self.frames.stop())

    async def drop(self) -> None:
        """The socket goes away without a ``stop`` frame first (a network failure)."""
        assert self.websocket is not None
        await self.websocket.aclose(code=1001)

    async def _read_forever(self) -> None:
        assert self.websocket is not None
        try:
            while True:
                message = await self.websocket.get_message()
                assert isinstance(message, str)
                try:
                    validate_twilio_outbound(message)
                except (jsonschema.ValidationError, AssertionError) as exc:
                    self.invalid.append(f"{message[:120]}: {exc}")
                frame = json.loads(message)
                if frame.get("streamSid") != self.stream_sid:
                    self.invalid.append(f"wrong streamSid: {message[:120]}")
                self.outbound.append(frame)
                self._arrived.set()
                self._arrived = trio.Event()
        except trio_websocket.ConnectionClosed:
            pass

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        with trio.fail_after(STEP_TIMEOUT):
            while not predicate(self.outbound):
                await self._arrived.wait()

    def media(self) -> list[str]:
        return [frame["media"]["payload"] for frame in self.outbound if frame["event"] == "media"]
