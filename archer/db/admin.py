"""``archer db init`` and ``archer db seed``: blocking administration, one engine each.

Layer: database adapter (sync; the CLI calls it outside trio). Errors arrive as ``StoreError``
or ``ConfigError`` from the functions it wraps, so the CLI prints one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from archer.db.engine import init_schema, make_engine
from archer.db.seed import SeedSummary, seed_demo_bank

if TYPE_CHECKING:
    from pathlib import Path


def init_database(url: str) -> None:
    """Create the schema (idempotent)."""
    engine = make_engine(url, pool_size=1)
    try:
        init_schema(engine)
    finally:
        engine.dispose()


def seed_database(url: str, path: Path | None = None) -> SeedSummary:
    """Create the schema if needed and load the demo bank from ``path`` (idempotent).

    ``None``: the demo bank shipped in the package.
    """
    engine = make_engine(url, pool_size=1)
    try:
        init_schema(engine)
        return seed_demo_bank(engine) if path is None else seed_demo_bank(engine, str(path))
    finally:
        engine.dispose()


def describe(url: str) -> str:
    """The database URL without its password, for messages."""
    return sa.make_url(url).render_as_string(hide_password=True)
