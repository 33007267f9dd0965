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

__all__ = ["db_now"]


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
