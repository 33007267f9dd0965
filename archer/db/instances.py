"""Instances that know each other: a lease per process, and the reaper that buries the dead.

Layer: database adapter (SQLAlchemy Core in worker threads, like ``archer.db.store``).

Rules:

- Every Archer process has an id (``INSTANCE_ID``) and a row in ``instances`` whose
  ``renewed_at`` it sets to the database's ``now()`` every ``INSTANCE_HEARTBEAT_SECONDS``
  (``run_heartbeat``). A row not renewed for ``INSTANCE_LEASE_SECONDS`` (or absent) is a dead
  instance. Only the database's clock is used (``archer.db.clock``).
- A call row names the instance carrying its stream (``calls.instance_id``, set by the claim).
  A restarted container keeps its pod's name as ``INSTANCE_ID``, so the first renewal of a new
  process finishes the calls its predecessor left open under that id (``SqlInstances.renew``).
- The reaper (``run_reaper``, in every instance) finishes open calls whose instance is dead:
  ``status=failed`` (``completed`` if Twilio's status callback already said so),
  ``end_reason=instance_lost``, ``ended_at`` = the lease's last renewal (now,
  if the row is gone); and any call still open ``overdue_seconds`` after it started, whatever its
  lease says (``end_reason=overdue``). Turns and tool calls already written stay.
- Safe with any number of reapers at once: it is one conditional ``UPDATE ... RETURNING`` on open
  rows. On PostgreSQL a second reaper blocked on the same row re-checks the condition after the
  first commits and skips it, so each call is reaped (and logged, and counted) exactly once.
- What wins: a finished row stays finished against the reaper and the status callback (they only
  touch open rows) and against a write of a call still in progress; the call's own final record
  (its flush, or the spool's replay of it) replaces a reaper's or callback's guess, because it
  knows how the call really ended. See ``SqlCallStore.save_call``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeVar, TypeVarTuple

import attrs
import sqlalchemy as sa
import structlog
import trio
from sqlalchemy.dialects import postgresql, sqlite

from archer.call.records import OPEN_STATUSES
from archer.db.clock import db_now
from archer.db.leases import carrier_alive, carrier_lease
from archer.db.tables import calls, instances
from archer.db.threads import run_in_thread
from archer.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from archer.db.store import SqlCallStore

__all__ = [
    "OVERDUE_MARGIN_SECONDS",
    "ReapedCall",
    "SqlInstances",
    "run_heartbeat",
    "run_reaper",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: A call still open this long after MAX_CALL_SECONDS is reaped whatever its lease says: its own
#: instance cut it at MAX_CALL_SECONDS and flushes within FLUSH_TIMEOUT, so a minute is generous.
OVERDUE_MARGIN_SECONDS: Final = 60.0


@attrs.frozen(slots=True)
class ReapedCall:
    """A call a reaper finished, and why (``instance_lost`` or ``overdue``)."""

    call_sid: str
    end_reason: str
    instance_id: str | None


@attrs.define
class SqlInstances:
    """This instance's lease, and the reaper's statement; shares the call store's engine."""

    _store: SqlCallStore
    instance_id: str
    #: When this process started, by its own host's clock (the server passes it in). Only
    #: compared with ``calls.connected_at``, which this same host wrote when it claimed a
    #: stream, to tell a previous process's calls under the same ``INSTANCE_ID`` (a restarted
    #: container keeps its pod's name) from this one's; never an expiry.
    started_at: datetime
    _adopted: bool = False

    async def renew(self) -> list[ReapedCall]:
        """Create or renew this instance's lease (``renewed_at`` = the database's now).

        The first renewal that succeeds also finishes the calls a previous process with this
        ``INSTANCE_ID`` left open (they look alive to every reaper once this lease is renewed);
        those are returned (``instance_lost``, ended at the old lease's last renewal).

        Raises:
            StoreError: the database is unavailable.

        Cancellation: the statement finishes in its thread (bounded by the driver timeouts).
        """
        orphans = await self._run("renew_lease", self._renew_sync, not self._adopted)
        self._adopted = True
        return orphans

    async def retire(self) -> None:
        """Delete this instance's lease (a clean shutdown, after its calls were flushed).

        Raises:
            StoreError: the database is unavailable.

        Cancellation: as ``renew``.
        """
        await self._run("retire_lease", self._retire_sync)

    async def reap(self, *, lease_seconds: float, overdue_seconds: float) -> list[ReapedCall]:
        """Finish every open call whose instance is dead or that is overdue; the calls finished.

        Raises:
            StoreError: the database is unavailable.

        Cancellation: as ``renew``; the update commits or not as a whole.
        """
        return await self._run("reap_calls", self._reap_sync, lease_seconds, overdue_seconds)

    async def _run(self, operation: str, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        # Not observed: the lease's statements are not among the metrics' operations.
        return await run_in_thread(operation, fn, *args, limiter=self._store.limiter)

    def _renew_sync(self, adopt: bool) -> list[ReapedCall]:
        with self._store.engine.begin() as conn:
            orphans = conn.execute(self._finish_orphans()).all() if adopt else []
            insert = (
                postgresql.insert(instances)
                if conn.dialect.name == "postgresql"
                else sqlite.insert(instances)
            )
            stmt = insert.values(id=self.instance_id, started_at=db_now(), renewed_at=db_now())
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[instances.c.id],
                    set_={
                        "renewed_at": stmt.excluded.renewed_at,
                        # A new process under an old id starts a new lease.
                        **({"started_at": stmt.excluded.started_at} if adopt else {}),
                    },
                )
            )
        return [ReapedCall(row.call_sid, row.end_reason, row.instance_id) for row in orphans]

    def _finish_orphans(self) -> sa.Update:
        """Open calls under this id that a previous process claimed (before this one started)."""
        return (
            sa.update(calls)
            .where(
                calls.c.instance_id == self.instance_id,
                calls.c.status.in_(OPEN_STATUSES),
                sa.or_(calls.c.connected_at.is_(None), calls.c.connected_at < self.started_at),
            )
            .values(
                status=sa.case((calls.c.twilio_status == "completed", "completed"), else_="failed"),
                end_reason="instance_lost",
                ended_at=sa.func.coalesce(carrier_lease(), db_now()),
                error="the process carrying the call stopped; a new one took its INSTANCE_ID",
                stream_token_hash=None,
            )
            .returning(calls.c.call_sid, calls.c.end_reason, calls.c.instance_id)
        )

    def _retire_sync(self) -> None:
        with self._store.engine.begin() as conn:
            conn.execute(sa.delete(instances).where(instances.c.id == self.instance_id))

    def _reap_sync(self, lease_seconds: float, overdue_seconds: float) -> list[ReapedCall]:
        lost = sa.and_(calls.c.instance_id.is_not(None), ~carrier_alive(lease_seconds))
        overdue = calls.c.started_at < db_now(-overdue_seconds)
        stmt = (
            sa.update(calls)
            .where(calls.c.status.in_(OPEN_STATUSES), sa.or_(lost, overdue))
            .values(
                # Twilio's own verdict if its final status came while the lease was still live.
                status=sa.case((calls.c.twilio_status == "completed", "completed"), else_="failed"),
                end_reason=sa.case((lost, "instance_lost"), else_="overdue"),
                # The last moment the dead instance was known alive: the best end we know.
                ended_at=sa.case(
                    (lost, sa.func.coalesce(carrier_lease(), db_now())), else_=db_now()
                ),
                error=sa.case(
                    (lost, "the instance carrying the call stopped renewing its lease"),
                    else_="still open past the maximum call length",
                ),
                stream_token_hash=None,
            )
            .returning(calls.c.call_sid, calls.c.end_reason, calls.c.instance_id)
        )
        with self._store.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        return [ReapedCall(row.call_sid, row.end_reason, row.instance_id) for row in rows]


async def run_heartbeat(
    lease: SqlInstances,
    *,
    interval: float,
    reaped: Callable[[ReapedCall], None] | None = None,
) -> None:
    """Renew the lease now and every ``interval`` seconds, for as long as the server runs.

    A failed renewal is logged and tried again next time (the database may be back by then).
    Calls a previous process under this id left open are logged (``call.reaped``) and handed
    to ``reaped``, as the reaper's are.

    Cancellation: stops between renewals; the lease is left to expire (or ``retire`` it).
    """
    failing = False
    while True:
        try:
            orphans = await lease.renew()
        except StoreError as exc:
            if not failing:
                log.warning("instance.lease_not_renewed", error=str(exc))
            failing = True
        else:
            if failing:
                log.info("instance.lease_renewed_again")
            failing = False
            _report(orphans, reaped)
        await trio.sleep(interval)


def _report(calls_reaped: list[ReapedCall], reaped: Callable[[ReapedCall], None] | None) -> None:
    for call in calls_reaped:
        log.warning(
            "call.reaped",
            call_sid=call.call_sid,
            end_reason=call.end_reason,
            carried_by=call.instance_id,
        )
        if reaped is not None:
            reaped(call)


async def run_reaper(
    lease: SqlInstances,
    *,
    interval: float,
    lease_seconds: float,
    overdue_seconds: float,
    reaped: Callable[[ReapedCall], None] | None = None,
) -> None:
    """Reap every ``interval`` seconds (the first run after one interval), until cancelled.

    Each call finished is logged once (``call.reaped``) and handed to ``reaped`` (the metric).

    Cancellation: stops between runs; a run in progress commits or not as a whole.
    """
    while True:
        await trio.sleep(interval)
        try:
            calls_reaped = await lease.reap(
                lease_seconds=lease_seconds, overdue_seconds=overdue_seconds
            )
        except StoreError as exc:
            log.warning("instance.reaper_failed", error=str(exc))
            continue
        _report(calls_reaped, reaped)
