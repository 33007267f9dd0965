"""Fixtures shared by every test tier.

Database fixtures: ``sqlite_url`` (a file in ``tmp_path``), ``postgres_url`` (a throw-away schema
on the server named by ``ARCHER_TEST_POSTGRES_URL``), ``database_url`` (each test once per
backend) and ``sql_store`` (a ``SqlCallStore`` on ``database_url`` with the schema applied).

Without a reachable PostgreSQL the postgres tests skip locally and FAIL when ``CI`` is set: CI
exists to run them. Every test that touches PostgreSQL carries the ``postgres`` marker, so
``-m "not postgres"`` deselects them all.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest
import sqlalchemy as sa
import trio
from sqlalchemy.exc import OperationalError

from archer.db.engine import init_schema
from archer.db.store import SqlCallStore

# --- databases ------------------------------------------------------------------------------

DEFAULT_POSTGRES_URL: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reaches PostgreSQL, directly or through ``database_url``."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        via_param = callspec is not None and callspec.params.get("database_url") == "postgres"
        if via_param or "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh, empty schema, dropped afterwards."""
    base = sa.make_url(os.environ.get("ARCHER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    if base.drivername in ("postgres", "postgresql"):
        base = base.set(drivername="postgresql+psycopg")  # as make_engine does
    schema = f"archer_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = str(exc.orig).strip().splitlines()[0]
        message = (
            f"PostgreSQL not reachable at {base.render_as_string(hide_password=True)}: {reason}"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so the postgres tests must run)")
        pytest.skip(message)
    try:
        # The store's engine folds this into its own connection options (statement_timeout).
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLite database file of its own for this test."""
    return f"sqlite:///{tmp_path}/archer.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test once on SQLite and once on PostgreSQL (looked up lazily, so SQLite runs alone)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def sql_store(database_url: str) -> AsyncIterator[SqlCallStore]:
    """A ``SqlCallStore`` on ``database_url`` with the schema created; closed afterwards."""
    store = SqlCallStore.open(database_url, pool_size=2)
    try:
        await trio.to_thread.run_sync(init_schema, store.engine)
        yield store
    finally:
        await store.aclose()
