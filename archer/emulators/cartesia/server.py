"""The Cartesia emulator's server: the WebSocket upgrade of both agent endpoints.

Layer: emulator (trio-websocket server). Product code: the demo, ``archer emulate cartesia`` and
the end-to-end tests talk to it exactly as Archer talks to Cartesia. One emulator serves both
protocols and plays the same ``AgentScript`` (``archer.emulators.cartesia.script``) on either:
this module checks the upgrade and hands the connection to ``ManagedCall``
(``archer.emulators.cartesia.managed``) or ``LineCall`` (``archer.emulators.cartesia.line``),
which share the script player (``archer.emulators.cartesia.player``). Speech comes from 8 kHz
μ-law clips (``archer.emulators.cartesia.session.Clip``), loaded when the emulator is made.

Upgrade (both protocols): authentication first, as a gateway does: ``X-API-Key`` or
``Authorization: Bearer`` must be the key, else HTTP 401; then the path must be
``/v1/agents/websocket/{agent_id}`` (Managed) or ``/agents/stream/{agent_id}`` (Line), else
404. ``cartesia_version`` (query, which wins) or ``Cartesia-Version`` is recorded.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import numpy as np
import soxr
import trio
import trio_websocket

from archer.audio import clips, g711
from archer.emulators.cartesia.line import LineCall
from archer.emulators.cartesia.managed import ManagedCall
from archer.emulators.cartesia.script import AgentScript, AgentScriptError
from archer.emulators.cartesia.session import (
    SAMPLE_RATES,
    Clip,
    ClipSource,
    EmulatedSession,
    bundled_clip,
    chunk_bytes,
)

__all__ = ["MAX_MESSAGE_SIZE", "CartesiaEmulator", "serve_cartesia_emulator"]

#: Largest message accepted: 1 MiB, what Cartesia clients allow for audio.
MAX_MESSAGE_SIZE: Final = 1024 * 1024

_BASE62: Final = string.ascii_letters + string.digits


@attrs.define
class CartesiaEmulator:
    """Both agent endpoints for one agent, playing ``script`` on every connection.

    Clips are loaded when the emulator is made (build it before serving): a script naming an
    unknown clip fails here, not mid-call.
    """

    api_key: str = attrs.field(repr=False)
    script: AgentScript
    agent_id: str = "agent_emulated"
    #: More agent ids served the same way (``archer emulate cartesia`` adds CARTESIA_AGENT_ID, so
    #: one ``.env`` configures Archer and the emulator alike).
    also_agent_ids: frozenset[str] = frozenset()
    #: Seconds the first message (``session_create``, Line's ``start``) may take.
    session_create_timeout: float = 10.0
    #: Seconds between the first message and readiness (Managed ``session_ready``; on Line,
    #: after the immediate ``ack``); audio in between is dropped.
    ready_delay: float = 0.0
    #: Line only: a session with no client message for this long closes 1000
    #: ``connection idle timeout``.
    idle_timeout: float = 180.0
    #: Faults for reconnect tests (issue 16). Connections after this many accepted ones are
    #: refused with HTTP 503, as a restarting server does (None: every one is accepted)...
    accept_sessions: int | None = None
    #: ...and the first this many accepted sessions close 1011 halfway through their first
    #: spoken turn, as an agent that failed does (cartesia-agents.md: 1011 "agent failed").
    fail_mid_turn: int = 0
    #: Called with one human-readable line per notable step.
    progress: Callable[[str], None] | None = None
    clips: ClipSource = bundled_clip
    sessions: list[EmulatedSession] = attrs.Factory(list)
    _clips: dict[str, Clip] = attrs.field(init=False, factory=dict, repr=False)
    _rendered: dict[tuple[str, str], bytes] = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        for name in sorted(self.script.clip_names()):
            try:
                self._clips[name] = self.clips(name)
            except KeyError as exc:
                raise AgentScriptError(
                    f"agent script {self.script.name!r}: clip {name!r} cannot be loaded: "
                    f"{exc.args[0] if exc.args else exc}"
                ) from None

    def report(self, line: str) -> None:
        """Pass ``line`` to ``progress``, if set."""
        if self.progress is not None:
            self.progress(line)

    def clip(self, name: str) -> Clip:
        """The loaded clip ``name`` (one the script says)."""
        return self._clips[name]

    def rendered(self, name: str, input_format: str) -> bytes:
        """Clip ``name`` in ``input_format``, padded with silence to whole 20 ms chunks.

        PCM formats decode the μ-law and resample the whole clip once (then cached), so chunk
        boundaries never click.
        """
        key = (name, input_format)
        if key not in self._rendered:
            ulaw = self._clips[name].audio
            rate = SAMPLE_RATES[input_format]
            if input_format == "mulaw_8000":
                audio, silence = ulaw, bytes([g711.SILENCE])
            else:
                resampled = soxr.resample(g711.decode_samples(ulaw), clips.SAMPLE_RATE, rate)
                audio, silence = np.asarray(resampled, dtype="<i2").tobytes(), b"\x00\x00"
            chunk = chunk_bytes(input_format)
            audio += silence * ((-len(audio) % chunk) // len(silence))
            self._rendered[key] = audio
        return self._rendered[key]

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        """Serve one connection: check the upgrade, then run the script until it ends.

        Cancellation: the connection is dropped; the session is marked ended.
        """
        parts = urlsplit(request.path)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        if not self._authorised(headers):
            self.report("refused a connection: bad API key (401)")
            await request.reject(401, body=b"invalid API key")
            return
        protocol: Literal["managed", "line"]
        path = unquote(parts.path)
        served = {self.agent_id, *self.also_agent_ids}
        agent_id = path.rpartition("/")[2]
        if agent_id in served and path == f"/v1/agents/websocket/{agent_id}":
            protocol = "managed"
        elif agent_id in served and path == f"/agents/stream/{agent_id}":
            protocol = "line"
        else:
            self.report(f"refused a connection: no agent at {parts.path[:80]} (404)")
            await request.reject(404, body=b"agent not found")
            return
        if self.accept_sessions is not None and len(self.sessions) >= self.accept_sessions:
            self.report("refused a connection: the agent is unavailable (503)")
            await request.reject(503, body=b"service unavailable")
            return
        # On Cartesia's WebSockets the query parameter wins over the header.
        version = parse_qs(parts.query).get("cartesia_version", [None])[0]
        session = EmulatedSession(
            call_id=_random_id("ac_"),
            agent_version_id=_random_id("av_"),
            cartesia_version=version or headers.get("cartesia-version"),
            protocol=protocol,
            agent_id=agent_id,
            fail_mid_turn=len(self.sessions) < self.fail_mid_turn,
        )
        self.sessions.append(session)
        try:
            websocket = await request.accept()
            if protocol == "line":
                await LineCall(self, websocket, session).run()
            else:
                await ManagedCall(self, websocket, session).run()
        except trio_websocket.ConnectionClosed:
            session.ended_by = "client"  # gone during the upgrade, before any session began
        finally:
            session.ended.set()

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        key = headers.get("x-api-key")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if key is None and scheme.lower() == "bearer":
            key = token.strip()
        return key is not None and secrets.compare_digest(key.encode(), self.api_key.encode())


async def serve_cartesia_emulator(
    emulator: CartesiaEmulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``emulator`` on ``host:port``; ``nursery.start`` returns its ``ws://`` base URL.

    Cancellation: cancel to stop serving; open sessions end with it.
    """
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                emulator.handle,
                host,
                port,
                None,
                max_message_size=MAX_MESSAGE_SIZE,
            )
        )
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"ws://{shown}:{server.port}")


def _random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(22))
