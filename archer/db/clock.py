"""The database's clock, as SQL: the one clock every expiry and lease in Archer is judged by.

Layer: database adapter (SQLAlchemy only; no trio, no logging).

Rules: nothing in ``archer/db`` compares a stored time with a host's ``datetime.now()``: N
instances have N clocks, and a lease or a token must not expire early or late because one host's
clock drifted. ``db_now(offset)`` is ``now() + offset`` evaluated by the database.

On PostgreSQL that is ``now()`` (the transaction's start, a ``timestamptz``). SQLite has no time
zones and stores Archer's timestamps as naive-UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``
(``archer.db.tables.UtcDateTime``); ``strftime('%Y-%m-%d %H:%M:%f', 'now', ...)`` is UTC text of
the same shape to the millisecond, so the two compare correctly as text and read back as
datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from archer.db.tables import UtcDateTime

__all__ = ["db_clock_now", "db_now"]


class _DbNow(FunctionElement[datetime]):
    """The database's current UTC time plus a number of seconds (a bound parameter)."""

    type = UtcDateTime()
    inherit_cache = True
    name = "archer_db_now"


def db_now(offset_seconds: float = 0.0) -> _DbNow:
    """The database's ``now()`` plus ``offset_seconds`` (negative: in the past), as SQL."""
    return _DbNow(sa.literal(float(offset_seconds), sa.Float()))


@compiles(_DbNow, "postgresql")
def _now_postgresql(element: _DbNow, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(now() + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(_DbNow, "sqlite")
def _now_sqlite(element: _DbNow, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {seconds}))"


class _DbClockNow(FunctionElement[datetime]):
    """The database's wall clock at the statement (not the transaction's start), plus seconds."""

    type = UtcDateTime()
    inherit_cache = True
    name = "archer_db_clock_now"


def db_clock_now(offset_seconds: float = 0.0) -> _DbClockNow:
    """The database's clock at this statement plus ``offset_seconds``, as SQL.

    PostgreSQL's ``now()`` is fixed when the transaction began, which may be long before a lock
    the transaction waited for was granted; ``clock_timestamp()`` is the statement's moment (the
    outbound pace is measured with it). SQLite's ``'now'`` already is the statement's moment.
    """
    return _DbClockNow(sa.literal(float(offset_seconds), sa.Float()))


@compiles(_DbClockNow, "postgresql")
def _clock_now_postgresql(element: _DbClockNow, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(clock_timestamp() + make_interval(secs => {seconds}))"


@compiles(_DbClockNow, "sqlite")
def _clock_now_sqlite(element: _DbClockNow, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {seconds}))"
