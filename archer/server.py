"""``archer serve``: hypercorn on trio, serving the app until SIGTERM or SIGINT.

Layer: server (process wiring). Builds the services once from ``Settings`` and owns their
lifetime: the database engine is opened before serving and disposed after. With
``--workers N`` each worker process runs this same ``serve`` on sockets its supervisor bound
(``archer.workers``).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from archer.app import Services, create_app
from archer.bank.tools import bank_tools
from archer.call.ports import AgentConnector
from archer.call.tools import ToolRegistry
from archer.cartesia.client import CartesiaManagedConnector
from archer.cartesia.line_client import CartesiaLineConnector
from archer.db.bank import SqlBankStore
from archer.db.engine import init_schema
from archer.db.spool import JsonlSpool, run_spool_replay
from archer.db.store import SqlCallStore
from archer.errors import StoreError
from archer.hypercorn_settings import load_hypercorn_settings
from archer.metrics import Metrics
from archer.settings import Settings
from archer.twilio.rest import TwilioRestControl
from archer.twilio.signature import SignatureChecker
from archer.web.media_listener import serve_media_listener

log = structlog.get_logger(__name__)

#: After the drain, connections still open get this long before hypercorn cancels them.
SHUTDOWN_GRACE: Final = 1.0


@asynccontextmanager
async def open_services(
    settings: Settings, *, spool: JsonlSpool, tools: ToolRegistry | None = None
) -> AsyncIterator[Services]:
    """Open the database (creating the schema if needed) and build the app's services.

    ``tools`` replaces the banking tools (tests use their own).

    Cancellation: the database engine and Twilio's HTTP connections are released on the way out.
    """
    metrics = Metrics()
    store = attrs.evolve(
        SqlCallStore.open(settings.database_url, pool_size=settings.db_pool_size),
        observe=metrics.db_operation,
    )
    telephony = TwilioRestControl(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        api_base_url=settings.twilio_api_base_url,
        observe=metrics.twilio_rest,
    )
    try:
        try:
            await trio.to_thread.run_sync(init_schema, store.engine)
        except StoreError as exc:
            # Serve anyway: callers hear the apology and /readyz says why until it comes back.
            log.error("server.database_unavailable", error=str(exc))
        if tools is None:
            tools = bank_tools(
                SqlBankStore.from_call_store(store),
                telephony,
                human_agent_number=settings.human_agent_number,
                transfer_allowlist=settings.transfer_allowlist,
            )
        yield Services(
            settings=settings,
            store=store,
            agents=agent_connector(settings),
            tools=tools,
            signatures=SignatureChecker(settings.twilio_auth_token),
            spool=spool,
            metrics=metrics,
        )
    finally:
        telephony.close()
        with trio.move_on_after(5, shield=True):
            await store.aclose()


def agent_connector(settings: Settings) -> AgentConnector:
    """The agent connector ``CARTESIA_PROTOCOL`` names: Managed Agents or a Line agent."""
    limits = settings.limits
    if settings.cartesia_protocol == "line":
        return CartesiaLineConnector(
            ws_url=settings.cartesia_ws_url,
            agent_id=settings.cartesia_agent_id,
            api_key=settings.cartesia_api_key,
            version=settings.cartesia_version,
            ready_timeout=limits.agent_ready_timeout,
            max_message_bytes=limits.max_message_bytes,
            output_format=settings.agent_output_format,
            voice_id=settings.cartesia_voice_id,
            introduction=settings.cartesia_line_introduction,
            system_prompt=settings.cartesia_line_system_prompt,
        )
    return CartesiaManagedConnector(
        ws_url=settings.cartesia_ws_url,
        agent_id=settings.cartesia_agent_id,
        api_key=settings.cartesia_api_key,
        version=settings.cartesia_version,
        ready_timeout=limits.agent_ready_timeout,
        max_message_bytes=limits.max_message_bytes,
    )


def hypercorn_config(
    settings: Settings, *, host: str, port: int, path: Path | None = None
) -> Config:
    """Hypercorn settings: packaged defaults, then ``path`` (a TOML file) if given, then Archer's.

    Raises:
        ConfigError: ``path`` is missing or malformed (the message names it).
    """
    config = Config.from_mapping(load_hypercorn_settings(path))
    config.bind = [f"{host}:{port}"]
    config.websocket_max_message_size = settings.limits.max_message_bytes
    # Archer drains live calls itself (``serve``); once it hands over, connections still open
    # get a moment, then are cancelled and their calls flushed (shielded).
    config.graceful_timeout = SHUTDOWN_GRACE
    config.accesslog = None
    # Hypercorn's own lines go through the root logger, rendered like Archer's (not twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def wait_for_termination() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("server.stopping", signal=signal.Signals(signum).name)
            return


# hypercorn's serve reports readiness through the task_status handed on below.
async def serve(  # noqa: ASYNC128
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    tools: ToolRegistry | None = None,
    hypercorn_toml: Path | None = None,
    listen_fds: Sequence[int] = (),
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_termination,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Archer until ``shutdown_trigger`` returns, then drain; reports the bound URLs.

    Draining: ``/readyz`` answers 503 and new calls hear the apology at once; live calls get
    ``DRAIN_TIMEOUT`` to end, then are cancelled and flushed (``end_reason=server_shutdown``).
    The spool is replayed at start and every ``SPOOL_REPLAY_INTERVAL`` while serving.

    ``listen_fds``: serve on these already-listening sockets (inherited from the ``--workers``
    supervisor) instead of binding ``host``:``port``.

    Cancellation: stops serving at once; live calls are cancelled and flushed.
    """
    spool = JsonlSpool(Path(settings.spool_path))
    async with open_services(settings, spool=spool, tools=tools) as services:
        config = hypercorn_config(
            settings,
            host=host if host is not None else settings.host,
            port=port if port is not None else settings.port,
            path=hypercorn_toml,
        )
        if listen_fds:
            # hypercorn's own way to adopt a socket someone else bound and listens on.
            config.bind = [f"fd://{fd}" for fd in listen_fds]
        if not settings.twilio_validate_signatures:
            log.warning("server.signatures_disabled", note="for local work only")
        drain = services.drain

        async def drain_then_stop() -> None:
            await shutdown_trigger()
            drain.start()
            log.info("server.draining", live_calls=drain.live_calls)
            with trio.move_on_after(settings.drain_timeout) as deadline:
                await drain.wait_idle()
            if deadline.cancelled_caught:
                log.warning("server.drain_timed_out", live_calls=drain.live_calls)

        log.info("server.starting", bind=config.bind, database=_database_kind(settings))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    run_spool_replay,
                    spool,
                    services.store,
                    interval=settings.spool_replay_interval,
                    depth=services.metrics.spool_depth,
                )
            )
            if settings.media_port:
                await nursery.start(
                    partial(
                        serve_media_listener,
                        services,
                        host=host if host is not None else settings.host,
                        port=settings.media_port,
                    )
                )
            await hypercorn_serve(
                create_app(services),
                config,
                shutdown_trigger=drain_then_stop,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()
        log.info("server.stopped")


def _database_kind(settings: Settings) -> str:
    return "postgresql" if settings.database_url.startswith("postgresql") else "sqlite"
