"""Engine construction: driver settings, pool sizing and UTC timestamps on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from archer.db.engine import init_schema, make_engine, pool_capacity
from archer.db.tables import calls, customers
from archer.errors import ConfigError


def test_postgres_engine_keeps_url_options_and_adds_statement_timeout(postgres_url: str) -> None:
    """The URL's search_path option survives next to the engine's own statement_timeout."""
    engine = make_engine(postgres_url, pool_size=1)
    try:
        with engine.connect() as conn:
            search_path = conn.exec_driver_sql("SHOW search_path").scalar_one()
            statement_timeout = conn.exec_driver_sql("SHOW statement_timeout").scalar_one()
    finally:
        engine.dispose()

    assert search_path.startswith("archer_test_")
    assert statement_timeout == "5s"


def test_postgres_pool_capacity_counts_the_overflow() -> None:
    """A PostgreSQL engine may hand out pool_size plus as many overflow connections."""
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test", pool_size=3)
    try:
        assert pool_capacity(engine) == 6
        assert engine.pool.timeout() == 5  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgres_urls_get_the_psycopg_driver(scheme: str) -> None:
    """Plain postgres(ql):// URLs, as hosting platforms hand them out, use psycopg 3."""
    engine = make_engine(f"{scheme}://postgres@127.0.0.1:5432/test", pool_size=1)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


def test_sqlite_file_pool_capacity_is_the_pool_size(sqlite_url: str) -> None:
    """An SQLite file gets pool_size connections and no overflow (SQLite has one writer)."""
    engine = make_engine(sqlite_url, pool_size=3)
    try:
        assert pool_capacity(engine) == 3
    finally:
        engine.dispose()


def test_in_memory_sqlite_shares_one_connection() -> None:
    """An in-memory database exists in a single connection, so the capacity is one."""
    engine = make_engine("sqlite://", pool_size=4)
    try:
        assert pool_capacity(engine) == 1
    finally:
        engine.dispose()


def test_sqlite_connections_enable_wal_foreign_keys_and_busy_timeout(sqlite_url: str) -> None:
    """Every SQLite connection runs in WAL mode, enforces FKs and waits for locks."""
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        with engine.connect() as conn:
            journal_mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            foreign_keys = conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
            busy_timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    finally:
        engine.dispose()

    assert (journal_mode, foreign_keys, busy_timeout) == ("wal", 1, 5000)


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/archer", "postgresql+psycopg2://u@h/db", "not a url"]
)
def test_unsupported_or_malformed_urls_are_config_errors(url: str) -> None:
    """A URL Archer cannot use is a ConfigError, not a driver traceback."""
    with pytest.raises(ConfigError):
        make_engine(url, pool_size=1)


def test_timestamps_come_back_as_aware_utc(database_url: str) -> None:
    """A timestamp written with any offset reads back as the same instant in UTC."""
    written = datetime(2024, 3, 10, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    engine = make_engine(database_url, pool_size=1)
    try:
        init_schema(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(customers).values(phone_e164="+15555550199"))
            conn.execute(sa.update(customers).values(created_at=written))
            created_at = conn.execute(sa.select(customers.c.created_at)).scalar_one()
    finally:
        engine.dispose()

    assert created_at == written
    assert created_at.tzinfo is UTC
    assert created_at.hour == 6


def test_server_default_timestamps_are_aware_utc(database_url: str) -> None:
    """created_at filled by the database's now() also reads back timezone-aware in UTC."""
    engine = make_engine(database_url, pool_size=1)
    try:
        init_schema(engine)
        with engine.begin() as conn:
            created_at = conn.execute(
                sa.insert(customers)
                .values(phone_e164="+15555550198")
                .returning(customers.c.created_at)
            ).scalar_one()
    finally:
        engine.dispose()

    assert created_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)


def test_naive_timestamps_are_refused(sqlite_url: str) -> None:
    """A naive datetime never reaches the database: its time zone would be a guess."""
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        init_schema(engine)
        with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
            conn.execute(
                sa.insert(customers).values(
                    phone_e164="+15555550197", created_at=datetime(2024, 1, 1)
                )
            )
    finally:
        engine.dispose()


# The calls table as schema.sql created it before agent_events existed.
_OLD_CALLS_DDL = """
CREATE TABLE calls (
    id                       {id},
    call_sid                 text NOT NULL UNIQUE,
    stream_sid               text,
    customer_id              bigint,
    from_number              text,
    to_number                text,
    status                   text NOT NULL,
    end_reason               text,
    agent_call_id            text,
    started_at               {ts} NOT NULL,
    connected_at             {ts},
    ended_at                 {ts},
    duration_ms              bigint,
    twilio_status            text,
    twilio_duration_s        integer,
    frames_in                bigint NOT NULL DEFAULT 0,
    frames_out               bigint NOT NULL DEFAULT 0,
    frames_dropped           bigint NOT NULL DEFAULT 0,
    error                    text,
    stream_token_hash        text,
    stream_token_expires_at  {ts}
)
"""


def test_init_schema_adds_agent_events_to_an_old_calls_table(database_url: str) -> None:
    """A database created before calls.agent_events gets the column (empty) on the next init."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            conn.exec_driver_sql(
                _OLD_CALLS_DDL.format(
                    id="bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
                    if postgres
                    else "INTEGER PRIMARY KEY",
                    ts="timestamptz" if postgres else "DATETIME",
                )
            )
            conn.exec_driver_sql(
                "INSERT INTO calls (call_sid, status, started_at)"
                " VALUES ('CAOLD', 'completed', '2025-05-01 14:00:00')"
            )

        init_schema(engine)
        init_schema(engine)  # and again: the column is there now, nothing to add

        with engine.begin() as conn:
            columns = {c["name"]: c for c in sa.inspect(conn).get_columns("calls")}
            old_row = conn.execute(
                sa.select(calls.c.agent_events).where(calls.c.call_sid == "CAOLD")
            ).scalar_one()
            conn.execute(
                sa.insert(calls).values(
                    call_sid="CANEW",
                    status="completed",
                    started_at=datetime(2025, 5, 1, tzinfo=UTC),
                    agent_events=[{"type": "note"}],
                )
            )
            new_row = conn.execute(
                sa.select(calls.c.agent_events).where(calls.c.call_sid == "CANEW")
            ).scalar_one()
    finally:
        engine.dispose()

    assert columns["agent_events"]["nullable"] is False
    # And calls.instance_id (leases and the reaper), empty on the old row.
    assert columns["instance_id"]["nullable"] is True
    assert old_row == []
    assert new_row == [{"type": "note"}]


def test_an_older_sqlite_bank_gains_the_outbound_columns(sqlite_url: str) -> None:
    """A database from before issue 22 gets transactions.card_id and the reviews' freeze_scope
    on the next init (the SQLite side of schema.sql's ADD COLUMN IF NOT EXISTS)."""
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE transactions (id INTEGER PRIMARY KEY, account_id BIGINT NOT NULL,"
                " posted_at TEXT NOT NULL, amount_cents BIGINT NOT NULL, description TEXT NOT NULL)"
            )
            conn.exec_driver_sql(
                "CREATE TABLE transaction_reviews (id INTEGER PRIMARY KEY, transaction_id BIGINT,"
                " customer_id BIGINT, call_sid TEXT, recognised BOOLEAN, cards_frozen TEXT,"
                " reviewed_at TEXT)"
            )
            conn.exec_driver_sql(
                "INSERT INTO transaction_reviews VALUES (1, 7, 1, 'CA1', 0, '2207', '2026-01-01')"
            )
        init_schema(engine)
        init_schema(engine)  # and again: idempotent
        with engine.connect() as conn:
            columns = {
                table: [row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
                for table in ("transactions", "transaction_reviews")
            }
            scope = conn.exec_driver_sql("SELECT freeze_scope FROM transaction_reviews").scalar()
    finally:
        engine.dispose()
    assert "card_id" in columns["transactions"]
    assert "freeze_scope" in columns["transaction_reviews"]
    assert scope == "none"  # an older review keeps its row; its scope is unknown
