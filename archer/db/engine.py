"""Engine construction and schema set-up for PostgreSQL (production) and SQLite (the default).

Layer: database adapter (sync SQLAlchemy; no trio). Everything here blocks except
``make_engine`` and ``pool_capacity``, which never touch the network: call ``init_schema`` from
a worker thread or the CLI.

Rules: trio cannot cancel a thread, so the driver and the pool carry the real deadlines: a
connection attempt, a pool checkout and a statement each give up after five seconds. Statement
parameters are hidden from error messages because they carry phone numbers and transcripts.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from archer.db.tables import metadata
from archer.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["init_schema", "make_engine", "pool_capacity", "schema_sql"]

#: Seconds to wait for a TCP connection to PostgreSQL, or for a free connection in the pool.
CONNECT_TIMEOUT_S: Final = 5
#: PostgreSQL aborts any statement running longer than this; SQLite waits this long for a lock.
STATEMENT_TIMEOUT_MS: Final = 5000

# Any constant works: it only has to be the same in every Archer process sharing a database,
# so two instances starting at once do not race on CREATE TABLE IF NOT EXISTS.
_SCHEMA_LOCK_KEY: Final = 0x41524348  # "ARCH"


def make_engine(url: str, *, pool_size: int) -> sa.Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://…`` (does not connect).

    ``postgresql://`` and ``postgres://`` URLs get the psycopg 3 driver, the only one Archer
    ships. Options already in the URL's ``options`` query (``-csearch_path=…``) are kept and the
    statement timeout is added to them.

    Raises:
        ConfigError: the URL is malformed or names a database Archer does not support.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"malformed database URL: {exc}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _make_sqlite_engine(parsed, pool_size=pool_size)
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return _make_postgres_engine(parsed.set(drivername="postgresql+psycopg"), pool_size)
    raise ConfigError(
        f"unsupported database URL scheme {parsed.drivername!r}: "
        "use sqlite:///path or postgresql+psycopg://user@host/db"
    )


def _make_postgres_engine(url: sa.URL, pool_size: int) -> sa.Engine:
    # connect_args replaces a same-named URL query parameter rather than merging with it, so
    # fold the URL's own options (a test's search_path) into ours instead of losing them.
    url_options = url.query.get("options", ())
    existing = [url_options] if isinstance(url_options, str) else list(url_options)
    options = " ".join([*existing, f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"])
    return sa.create_engine(
        url.difference_update_query(["options"]),
        pool_size=pool_size,
        # Bursts may double the pool briefly; pool_capacity sizes the trio limiter to match.
        max_overflow=pool_size,
        # A connection PostgreSQL dropped (restart, idle timeout) is replaced, not handed out.
        pool_pre_ping=True,
        pool_timeout=CONNECT_TIMEOUT_S,
        hide_parameters=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": options},
    )


def _make_sqlite_engine(url: sa.URL, *, pool_size: int) -> sa.Engine:
    in_memory = url.database in (None, "", ":memory:")
    engine = sa.create_engine(
        url,
        # Connections move between trio's worker threads; the pool hands each to one at a time.
        connect_args={"check_same_thread": False},
        hide_parameters=True,
        # An in-memory database lives in one connection: every thread must share it. A file
        # needs no overflow: SQLite runs one writer at a time however many connections wait.
        **(
            {"poolclass": sa.StaticPool}
            if in_memory
            else {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": CONNECT_TIMEOUT_S}
        ),
    )

    @event.listens_for(engine, "connect")
    def _configure_connection(
        dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry
    ) -> None:
        # Let SQLAlchemy's "begin" hook below start every transaction, not pysqlite's own
        # guesswork (which starts none for a SELECT).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL: readers (readiness checks, ops) never wait for the call writer.
            cursor.execute("PRAGMA journal_mode=WAL")
            # SQLite ignores REFERENCES and ON DELETE CASCADE unless asked, per connection.
            cursor.execute("PRAGMA foreign_keys=ON")
            # Wait for a competing writer instead of failing at once with "database is locked".
            cursor.execute(f"PRAGMA busy_timeout={STATEMENT_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front, waiting up to busy_timeout for it. A deferred
        # transaction that reads first (find the customer, then insert one) would instead fail
        # at once with "database is locked" when it tries to upgrade while another thread
        # writes. Readers pay a short wait behind a writer; the store's writes are all brief.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def pool_capacity(engine: sa.Engine) -> int:
    """How many connections the engine can hand out at once (size the trio limiter with it)."""
    pool = engine.pool
    if isinstance(pool, QueuePool):
        # SQLAlchemy keeps max_overflow private; -1 means unbounded, which make_engine never sets.
        return pool.size() + max(pool._max_overflow, 0)
    # StaticPool and SingletonThreadPool hold one connection; anything else is unknown, so
    # assume the only safe figure.
    return 1


def schema_sql() -> str:
    """The text of ``schema.sql`` as shipped inside the package."""
    return (resources.files("archer.db") / "schema.sql").read_text(encoding="utf-8")


def init_schema(engine: sa.Engine) -> None:
    """Create every table and index that does not exist yet (idempotent; blocks).

    PostgreSQL runs ``schema.sql`` itself, so production gets exactly the canonical schema;
    SQLite, which cannot parse it, gets the mirrored ``tables.metadata``.

    Raises:
        StoreError: the database is unreachable or refused the DDL.
    """
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Serialise concurrent inits: IF NOT EXISTS is not safe against a racing twin.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                conn.exec_driver_sql(schema_sql())
            else:
                metadata.create_all(conn)
                _add_missing_sqlite_columns(conn)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not create the schema: {exc}") from exc


#: Columns newer than some existing SQLite databases: (table, column, its SQLite definition).
#: The SQLite counterpart of schema.sql's ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``.
_SQLITE_LATER_COLUMNS: Final = (
    ("calls", "agent_events", "JSON NOT NULL DEFAULT '[]'"),
    ("calls", "instance_id", "TEXT"),
    ("calls", "agent_reconnects", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "agent_call_ids", "JSON NOT NULL DEFAULT '[]'"),
    ("calls", "frames_silenced_for_pin", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "frames_silenced_for_tones", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "dtmf_dropped", "INTEGER NOT NULL DEFAULT 0"),
    ("tool_calls", "outcome", "TEXT"),
    ("transactions", "card_id", "BIGINT REFERENCES cards (id)"),
    (
        "transaction_reviews",
        "freeze_scope",
        "TEXT NOT NULL DEFAULT 'none' CHECK (freeze_scope IN ('card', 'account', 'none'))",
    ),
)


def _add_missing_sqlite_columns(conn: sa.Connection) -> None:
    """Add the columns an existing SQLite database lacks (``create_all`` only adds tables)."""
    present: dict[str, set[str]] = {}
    for table, column, definition in _SQLITE_LATER_COLUMNS:
        if table not in present:
            present[table] = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}
        if column not in present[table]:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
