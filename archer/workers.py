"""``archer serve --workers N``: N worker processes on one set of listening sockets.

Layer: server (process wiring), beside ``archer.server``. The supervisor (the process the
operator started) binds the sockets once and starts N workers, each ``python -m archer serve``
with the sockets inherited; every worker is the ordinary ``serve`` (its own services, database
pool, metrics, spool and drain), so a call lives entirely in the worker that accepted its
socket. The kernel hands each new connection to whichever worker accepts first.

Rules:

- The supervisor serves nothing and holds no call state: it starts, watches and signals.
- SIGTERM or SIGINT to the supervisor becomes SIGTERM to every worker; each drains as the single
  process does. Workers ignore SIGINT, so a terminal's Ctrl-C (sent to the whole process group)
  is one stop, not two. The supervisor exits 0 only if it was asked to stop and every worker
  exited 0; otherwise 1, with the workers named in ``workers.stopped``.
- A worker that exits without being asked to is fatal: the supervisor logs it and stops the
  others. We prefer a loud crash (the orchestrator restarts the container at full capacity) to
  a server that silently runs at reduced capacity; there is no in-place respawn.
- Workers watch a pipe from the supervisor; if the supervisor dies (even by SIGKILL), they drain
  and exit rather than serve on unsupervised.
- Metrics: the supervisor makes a fresh directory for each run, hands it to every worker as
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode), marks each worker dead
  there when it exits (its live gauges stop counting; its counters stay, so totals never go
  back) and removes the directory once every worker is gone. Whichever worker answers a scrape
  reports the whole server (``archer.metrics``).
- Each worker is an instance of its own (``INSTANCE_ID`` plus ``-w<index>``): its own lease,
  and its own journal in the spool directory (``archer.db.spool``), which any instance replays
  once its writer is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import attrs
import structlog
import trio

from archer.errors import ArcherError, ConfigError, StoreError
from archer.settings import Settings

# archer.server (quart, hypercorn, SQLAlchemy: about a second to import) and archer.metrics
# (prometheus_client) are imported inside the functions, so a worker sets its SIGTERM handler
# before that, not after (``run_worker``).

log = structlog.get_logger(__name__)


def run_supervisor(
    settings: Settings,
    *,
    workers: int,
    host: str | None = None,
    port: int | None = None,
    hypercorn_toml: Path | None = None,
) -> int:
    """Serve with ``workers`` processes until SIGTERM/SIGINT; the exit status (0: clean stop).

    Raises:
        ConfigError: the hypercorn configuration asks for binds workers cannot share.
        ArcherError: the address could not be bound.
    """
    return trio.run(
        partial(
            supervise,
            settings,
            workers=workers,
            host=host,
            port=port,
            hypercorn_toml=hypercorn_toml,
        )
    )


async def supervise(
    settings: Settings,
    *,
    workers: int,
    host: str | None = None,
    port: int | None = None,
    hypercorn_toml: Path | None = None,
) -> int:
    """Bind, start ``workers`` workers, forward stop signals, wait for them all; exit status.

    Cancellation: the workers are not killed; they see the supervisor's pipe close when this
    process exits, and drain.
    """
    from archer.metrics import MULTIPROC_DIR_VARIABLE
    from archer.server import hypercorn_config

    config = hypercorn_config(
        settings,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        path=hypercorn_toml,
    )
    if config.quic_bind or (config.ssl_enabled and config.insecure_bind):
        # A worker maps the fds it inherits onto `bind` alone; these binds have no place there.
        raise ConfigError("--workers > 1 cannot share quic_bind or insecure_bind; remove them")
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        raise ArcherError(f"cannot listen on {', '.join(config.bind)}: {exc}") from exc
    listening = [*sockets.secure_sockets, *sockets.insecure_sockets]
    # Never written: it closes when this process ends, however it ends, and workers notice.
    supervisor_read, supervisor_write = os.pipe()
    # One scrape, every worker: their metric values meet in files here (archer.metrics).
    metrics_dir = Path(tempfile.mkdtemp(prefix="archer-metrics-"))
    worker_environ = {**os.environ, MULTIPROC_DIR_VARIABLE: str(metrics_dir)}
    supervision = _Supervision(metrics_dir=metrics_dir)
    try:
        for sock in listening:
            sock.listen(config.backlog)
        log.info(
            "workers.starting", workers=workers, bind=config.bind, metrics_dir=str(metrics_dir)
        )
        # Create the schema once, before the workers race to: SQLite would otherwise have N
        # processes switching a new file to WAL at the same moment.
        await trio.to_thread.run_sync(_init_schema, settings.database_url)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            for index in range(workers):
                process = await trio.lowlevel.open_process(
                    worker_command(
                        index,
                        host=host,
                        listen_fds=[sock.fileno() for sock in listening],
                        supervisor_fd=supervisor_read,
                        hypercorn_toml=hypercorn_toml,
                    ),
                    pass_fds=(*(sock.fileno() for sock in listening), supervisor_read),
                    env=worker_environ,
                )
                supervision.processes.append(process)
                log.info("workers.started", worker=index, pid=process.pid)
            # The workers hold the sockets now; the supervisor never accepts on them.
            for sock in listening:
                sock.close()
            os.close(supervisor_read)
            supervisor_read = -1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervision.forward_signals, signals)
                async with trio.open_nursery() as watchers:
                    for index, process in enumerate(supervision.processes):
                        watchers.start_soon(supervision.watch, index, process)
                nursery.cancel_scope.cancel(reason="every worker has exited")
    finally:
        for sock in listening:
            sock.close()
        if supervisor_read >= 0:
            os.close(supervisor_read)
        os.close(supervisor_write)
        if all(process.returncode is not None for process in supervision.processes):
            # A worker still running (this task was cancelled) keeps its files; /tmp's
            # cleaner takes them later.
            shutil.rmtree(metrics_dir, ignore_errors=True)
    exit_code = 1 if supervision.failures else 0
    (log.error if exit_code else log.info)(
        "workers.stopped", exit_code=exit_code, failed=supervision.failures or None
    )
    return exit_code


def worker_command(
    index: int,
    *,
    host: str | None,
    listen_fds: Sequence[int],
    supervisor_fd: int,
    hypercorn_toml: Path | None,
) -> list[str]:
    """The command line of worker ``index`` (settings come from the inherited environment).

    ``--host`` is passed on for anything a worker binds itself (the HTTP port is inherited).
    """
    command = [sys.executable, "-m", "archer", "serve", "--worker-index", str(index)]
    command += ["--supervisor-fd", str(supervisor_fd)]
    if host is not None:
        command += ["--host", host]
    for fd in listen_fds:
        command += ["--listen-fd", str(fd)]
    if hypercorn_toml is not None:
        command += ["--hypercorn-config", str(hypercorn_toml)]
    return command


@attrs.define
class _Supervision:
    """The workers, whether they were asked to stop, and which ones failed."""

    metrics_dir: Path
    processes: list[trio.Process] = attrs.Factory(list)
    stopping: bool = False
    failures: list[str] = attrs.Factory(list)

    async def forward_signals(self, signals: AsyncIterator[int]) -> None:
        """Turn every SIGTERM/SIGINT into SIGTERM to each worker still running."""
        async for signum in signals:
            log.info("workers.stopping", signal=signal.Signals(signum).name)
            self.stop_all()

    async def watch(self, index: int, process: trio.Process) -> None:
        """Wait for worker ``index`` to exit; an exit nobody asked for stops the others."""
        from prometheus_client.multiprocess import mark_process_dead

        code = await process.wait()
        # Its live gauges (calls active) no longer count towards the server's.
        mark_process_dead(process.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        described = f"worker {index} (pid {process.pid}) {_exit_text(code)}"
        if self.stopping and code == -signal.SIGTERM:
            # Our SIGTERM reached it before it set its handler (``run_worker`` does that first
            # thing, before serving): it stopped as asked, and had served nothing to drain.
            log.info("workers.worker_stopped_while_starting", worker=index, pid=process.pid)
        elif not self.stopping:
            log.error("workers.worker_died", worker=index, pid=process.pid, exit_code=code)
            self.failures.append(described)
            self.stop_all()
        elif code != 0:
            log.error("workers.worker_failed", worker=index, pid=process.pid, exit_code=code)
            self.failures.append(described)
        else:
            log.info("workers.worker_stopped", worker=index, pid=process.pid)

    def stop_all(self) -> None:
        self.stopping = True
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)


def _exit_text(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _init_schema(database_url: str) -> None:
    from archer.db.admin import init_database

    try:
        init_database(database_url)
    except StoreError as exc:
        # The workers try again themselves and serve the apology meanwhile, as one process does.
        log.error("workers.database_unavailable", error=str(exc))


def run_worker(
    settings: Settings,
    *,
    index: int,
    host: str | None = None,
    listen_fds: Sequence[int],
    supervisor_fd: int,
    hypercorn_toml: Path | None = None,
) -> None:
    """Be worker ``index``: ``serve`` on the inherited sockets until SIGTERM or the supervisor
    is gone, then drain as the single process does."""
    # Ctrl-C reaches the whole process group; the supervisor turns it into our SIGTERM. With
    # SIGINT ignored, trio installs no KeyboardInterrupt handler either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A SIGTERM before trio listens for it (a deploy right after start) must still mean "drain",
    # not the default "die": remember it until the shutdown trigger looks.
    early_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: early_stop.set())
    from archer.metrics import MULTIPROC_DIR_VARIABLE
    from archer.server import serve

    # Every line this process logs, in every task and thread (trio copies the context).
    structlog.contextvars.bind_contextvars(worker=index)
    settings = attrs.evolve(settings, instance_id=worker_instance_id(settings.instance_id, index))
    # Set by the supervisor (prometheus_client read it when it was imported just above).
    metrics_dir = os.environ.get(MULTIPROC_DIR_VARIABLE)
    trio.run(
        partial(
            serve,
            settings,
            host=host,
            hypercorn_toml=hypercorn_toml,
            listen_fds=listen_fds,
            metrics_dir=Path(metrics_dir) if metrics_dir else None,
            shutdown_trigger=partial(wait_for_stop, supervisor_fd, early_stop),
        )
    )


def worker_instance_id(instance_id: str, index: int) -> str:
    """The ``INSTANCE_ID`` of worker ``index``: each worker holds its own lease and journal."""
    return f"{instance_id}-w{index}"


async def wait_for_stop(supervisor_fd: int, early_stop: threading.Event) -> None:
    """Return on SIGTERM (now or before this was called), or when the supervisor is gone.

    A second SIGTERM while draining is ignored (the drain is bounded by ``DRAIN_TIMEOUT``).
    """
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        if early_stop.is_set():
            log.info("server.stopping", signal="SIGTERM")
            return
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for signum in signals:
                    log.info("server.stopping", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel(reason=f"{signal.Signals(signum).name} received")

            async def on_supervisor_gone() -> None:
                # Readable means end of file: the supervisor exited without stopping us.
                await trio.lowlevel.wait_readable(supervisor_fd)
                log.error("server.supervisor_gone")
                nursery.cancel_scope.cancel(reason="the supervisor exited")

            nursery.start_soon(on_signal)
            nursery.start_soon(on_supervisor_gone)
