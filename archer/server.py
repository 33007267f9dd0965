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
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from archer.app import create_app
from archer.bank.ports import PinPolicy
from archer.bank.tools import bank_tools
from archer.call.dispatcher import run_dispatcher
from archer.call.keypad import EntryRules
from archer.call.ports import AgentConnector
from archer.call.state import utc_now
from archer.call.tools import ToolRegistry
from archer.cartesia.line_client import CartesiaLineConnector
from archer.cartesia.managed_client import CartesiaManagedConnector
from archer.db.bank import SqlBankStore
from archer.db.call_facts import SqlCallFacts
from archer.db.engine import init_schema
from archer.db.instances import (
    OVERDUE_MARGIN_SECONDS,
    ReapedCall,
    SqlInstances,
    run_heartbeat,
    run_reaper,
)
from archer.db.outbound import SqlOutbound
from archer.db.reviews import SqlTransactionReviews
from archer.db.spool import JsonlSpool, run_spool_replay
from archer.db.store import SqlCallStore
from archer.errors import ConfigError, StoreError
from archer.hypercorn_settings import load_hypercorn_settings
from archer.metrics import Metrics
from archer.settings import Settings
from archer.twilio.rest import TwilioRestControl
from archer.twilio.signature import SignatureChecker
from archer.web.media_listener import serve_media_listener
from archer.web.services import Services

log = structlog.get_logger(__name__)

#: After the drain, connections still open get this long before hypercorn cancels them.
SHUTDOWN_GRACE: Final = 1.0


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    spool: JsonlSpool,
    tools: ToolRegistry | None = None,
    metrics_dir: Path | None = None,
) -> AsyncIterator[Services]:
    """Open the database (creating the schema if needed) and build the app's services.

    ``tools`` replaces the banking tools (tests use their own). ``metrics_dir``: the
    ``--workers`` multiprocess metrics directory (``archer.metrics``).

    Cancellation: the database engine and Twilio's HTTP connections are released on the way out.
    """
    metrics = Metrics(multiprocess_dir=metrics_dir, max_active_calls=settings.max_active_calls)
    store = attrs.evolve(
        SqlCallStore.open(settings.database_url, pool_size=settings.db_pool_size),
        observe=metrics.db_operation,
        instance_id=settings.instance_id,
        lease_seconds=settings.instance_lease_seconds,
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
                pin_policy=PinPolicy(settings.pin_max_failures, settings.pin_lockout_seconds),
                reviews=SqlTransactionReviews(store.engine, store.limiter),
                pin_entry=settings.pin_entry,
                entry_rules=EntryRules(
                    max_digits=settings.pin_max_digits,
                    digit_timeout=settings.pin_digit_timeout,
                    entry_timeout=settings.pin_entry_timeout,
                ),
                recording_pause=(
                    settings.recording_pause_behavior if settings.recording == "dual" else None
                ),
            )
        yield Services(
            settings=settings,
            store=store,
            agents=agent_connector(settings),
            tools=tools,
            signatures=SignatureChecker(settings.twilio_auth_token, settings.twilio_shared_keys),
            spool=spool,
            metrics=metrics,
            # The outbound queue shares the call store's engine and thread limiter.
            outbound=SqlOutbound(store.engine, store.limiter),
            outbound_telephony=telephony,
            call_facts=(
                SqlCallFacts(store.engine, store.limiter) if settings.outbound_from_number else None
            ),
        )
    finally:
        telephony.close()
        with trio.move_on_after(5, shield=True):
            await store.aclose()


@asynccontextmanager
async def hold_journal(spool: JsonlSpool, settings: Settings) -> AsyncIterator[None]:
    """Hold this instance's spool journal while it serves (``JsonlSpool.hold``).

    Raises:
        ConfigError: the spool directory is unusable, or another live process holds this
            ``INSTANCE_ID``'s journal.

    Cancellation: the lock is released on the way out.
    """
    with ExitStack() as held:
        try:
            held.enter_context(spool.hold())
        except OSError as exc:
            raise ConfigError(f"SPOOL_PATH={settings.spool_path!r}: {exc}") from None
        await trio.lowlevel.checkpoint()
        yield


def agent_connector(settings: Settings) -> AgentConnector:
    """The agent connector ``CARTESIA_PROTOCOL`` names: Managed Agents or a Line agent."""
    limits = settings.limits
    if settings.cartesia_protocol == "line":
        return CartesiaLineConnector(
            ws_url=settings.cartesia_ws_url,
            agent_id=settings.cartesia_agent_id,
            api_key=settings.cartesia_api_key,
            version=settings.cartesia_line_version,
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
        version=settings.cartesia_managed_version,
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
    metrics_dir: Path | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_termination,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Archer until ``shutdown_trigger`` returns, then drain; reports the bound URLs.

    Draining: ``/readyz`` answers 503 and new calls hear the apology at once; live calls get
    ``DRAIN_TIMEOUT`` to end, then are cancelled and flushed (``end_reason=server_shutdown``).
    The spool is replayed at start and every ``SPOOL_REPLAY_INTERVAL`` while serving. The
    instance's lease is renewed every ``INSTANCE_HEARTBEAT_SECONDS`` and its reaper runs every
    ``REAPER_INTERVAL`` (``archer.db.instances``); a clean stop deletes the lease.

    ``listen_fds``: serve on these already-listening sockets (inherited from the ``--workers``
    supervisor) instead of binding ``host``:``port``. ``metrics_dir``: the supervisor's
    multiprocess metrics directory, so ``/metrics`` reports every worker.

    Raises:
        ConfigError: the spool directory is unusable, or another live process holds this
            ``INSTANCE_ID``'s journal.

    Cancellation: stops serving at once; live calls are cancelled and flushed.
    """
    spool = JsonlSpool.for_instance(Path(settings.spool_path), settings.instance_id)
    async with (
        hold_journal(spool, settings),
        open_services(settings, spool=spool, tools=tools, metrics_dir=metrics_dir) as services,
    ):
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
        assert isinstance(services.store, SqlCallStore)
        lease = SqlInstances(services.store, settings.instance_id, utc_now())
        async with trio.open_nursery() as nursery:
            reaped = partial(_count_reaped, services.metrics)
            nursery.start_soon(
                partial(
                    run_heartbeat,
                    lease,
                    interval=settings.instance_heartbeat_seconds,
                    reaped=reaped,
                )
            )
            nursery.start_soon(
                partial(
                    run_reaper,
                    lease,
                    interval=settings.reaper_interval,
                    lease_seconds=settings.instance_lease_seconds,
                    overdue_seconds=settings.limits.max_call_seconds + OVERDUE_MARGIN_SECONDS,
                    reaped=reaped,
                )
            )
            nursery.start_soon(
                partial(
                    run_spool_replay,
                    spool,
                    services.store,
                    interval=settings.spool_replay_interval,
                    depth=services.metrics.spool_depth,
                )
            )
            if settings.outbound_from_number:
                # Outbound calls are on: this instance dispatches the shared queue too.
                assert isinstance(services.outbound, SqlOutbound)
                assert services.outbound_telephony is not None
                await nursery.start(
                    run_dispatcher, services.outbound, services.outbound_telephony, settings
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
            nursery.cancel_scope.cancel(reason="hypercorn has stopped serving")
        # Every call is flushed (or spooled): the lease can go, so nobody waits for it to lapse.
        with trio.move_on_after(SHUTDOWN_GRACE, shield=True):
            try:
                await lease.retire()
            except StoreError as exc:
                log.warning("instance.lease_not_retired", error=str(exc))
        log.info("server.stopped", instance_id=settings.instance_id)


def _count_reaped(metrics: Metrics, call: ReapedCall) -> None:
    metrics.call_reaped(call.end_reason)


def _database_kind(settings: Settings) -> str:
    return "postgresql" if settings.database_url.startswith("postgresql") else "sqlite"
