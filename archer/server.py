"""``archer serve``: hypercorn on trio, serving the app until SIGTERM or SIGINT.

Layer: server (process wiring). Builds the services once from ``Settings`` and owns their
lifetime: the database engine is opened before serving and disposed after.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from archer.app import Services, create_app
from archer.bank.tools import bank_tools
from archer.call.tools import ToolRegistry
from archer.cartesia.client import CartesiaManagedConnector
from archer.db.bank import SqlBankStore
from archer.db.engine import init_schema
from archer.db.store import SqlCallStore
from archer.errors import StoreError
from archer.settings import Settings
from archer.twilio.rest import TwilioRestControl
from archer.twilio.signature import SignatureChecker

log = structlog.get_logger(__name__)


@asynccontextmanager
async def open_services(
    settings: Settings, *, tools: ToolRegistry | None = None
) -> AsyncIterator[Services]:
    """Open the database (creating the schema if needed) and build the app's services.

    ``tools`` replaces the banking tools (tests use their own).

    Cancellation: the database engine and Twilio's HTTP connections are released on the way out.
    """
    store = SqlCallStore.open(settings.database_url, pool_size=settings.db_pool_size)
    telephony = TwilioRestControl.from_settings(settings)
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
            )
        yield Services(
            settings=settings,
            store=store,
            agents=CartesiaManagedConnector(
                ws_url=settings.cartesia_ws_url,
                agent_id=settings.cartesia_agent_id,
                api_key=settings.cartesia_api_key,
                version=settings.cartesia_version,
                ready_timeout=settings.limits.agent_ready_timeout,
                max_message_bytes=settings.limits.max_message_bytes,
            ),
            tools=tools,
            signatures=SignatureChecker(settings.twilio_auth_token),
        )
    finally:
        telephony.close()
        with trio.move_on_after(5, shield=True):
            await store.aclose()


def hypercorn_config(
    settings: Settings, *, host: str, port: int, path: Path | None = None
) -> Config:
    """Hypercorn settings: ``path`` (a TOML file) if given, then Archer's own on top."""
    config = Config.from_toml(path) if path is not None else Config()
    config.bind = [f"{host}:{port}"]
    config.websocket_max_message_size = settings.limits.max_message_bytes
    # Live calls get the drain timeout plus the flush after SIGTERM before they are cancelled.
    config.graceful_timeout = settings.drain_timeout + settings.limits.flush_timeout
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
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_termination,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Archer until ``shutdown_trigger`` returns; reports the bound URLs when listening.

    Cancellation: stops serving at once; live calls are cancelled and flushed.
    """
    async with open_services(settings, tools=tools) as services:
        config = hypercorn_config(
            settings,
            host=host if host is not None else settings.host,
            port=port if port is not None else settings.port,
            path=hypercorn_toml,
        )
        if not settings.twilio_validate_signatures:
            log.warning("server.signatures_disabled", note="for local work only")
        log.info("server.starting", bind=config.bind, database=_database_kind(settings))
        await hypercorn_serve(
            create_app(services), config, shutdown_trigger=shutdown_trigger, task_status=task_status
        )


def _database_kind(settings: Settings) -> str:
    return "postgresql" if settings.database_url.startswith("postgresql") else "sqlite"
