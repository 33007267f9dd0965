"""The trio/thread boundary of ``archer.db``: one unit of work in a worker thread, timed, with
the driver's errors turned into Archer's.

Layer: adapters (the database). Every SQL adapter — the call store, the bank's queries, the
instance leases — runs its sync SQLAlchemy work through ``run_in_thread``, so all of them are
gated by the same kind of limiter, all report to the metrics (``DbObserver``), and none lets a
SQLAlchemy or socket error past the boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar, TypeVarTuple

import structlog
import trio
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from archer.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class DbObserver(Protocol):
    """Receives the duration and outcome of each database operation (the metrics)."""

    def __call__(self, operation: str, seconds: float, *, error: bool) -> None: ...


async def run_in_thread(
    operation: str,
    fn: Callable[[*_Ts], _T],
    *args: *_Ts,
    limiter: trio.CapacityLimiter,
    observe: DbObserver | None = None,
    abandon_on_cancel: bool = False,
) -> _T:
    """Run ``fn(*args)`` in a worker thread gated by ``limiter``; report it to ``observe``.

    ``operation`` names it in the metrics, the log and the error.

    Raises:
        StoreError: the database (or the network to it) failed; the driver's one-line message
            is in the text, never SQL or parameters.

    Cancellation: trio cannot stop a thread, so the unit of work runs to its end (bounded by the
    driver timeouts) unless ``abandon_on_cancel``, when this returns at once and the thread
    finishes on its own, its result dropped.
    """
    started = trio.current_time()
    try:
        result = await trio.to_thread.run_sync(
            fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel
        )
    except (SQLAlchemyError, OSError) as exc:
        if observe is not None:
            observe(operation, trio.current_time() - started, error=True)
        message = f"{operation} failed: {describe_error(exc)}"
        log.warning("db.operation_failed", operation=operation, error=message)
        raise StoreError(message) from exc
    if observe is not None:
        observe(operation, trio.current_time() - started, error=False)
    return result


def describe_error(exc: BaseException) -> str:
    """The driver's one-line message (without SQLAlchemy's SQL echo and doc link)."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else 'no message'}"
