"""schema.sql is canonical: the SQLAlchemy tables must describe exactly what it creates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.sql.elements import UnaryExpression

from archer.db.engine import init_schema, make_engine, schema_sql
from archer.db.tables import metadata

REPO_ROOT = Path(__file__).resolve().parents[2]

# Reflection and the mirrored tables spell some types differently; compare families.
_FAMILIES = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "TEXT": "text",
    "BOOLEAN": "boolean",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "DOUBLE PRECISION": "double",
    "FLOAT(53)": "double",
    "JSONB": "jsonb",
}


_POSTGRES = PGDialect()  # type: ignore[no-untyped-call]


def _family(type_: sa.types.TypeEngine[Any]) -> str:
    compiled = type_.compile(dialect=_POSTGRES)
    return _FAMILIES.get(compiled, f"unexpected type {compiled}")


def _describe(table: sa.Table, index_sorting: dict[str, dict[str, Any]]) -> dict[str, object]:
    """Everything about a table the two sides must agree on, as plain comparable values."""
    return {
        "columns": [
            (
                c.name,
                _family(c.type),
                c.nullable,
                c.server_default is not None,
                c.identity is not None,
            )
            for c in table.columns
        ],
        "primary_key": [c.name for c in table.primary_key.columns],
        "unique": sorted(
            (str(c.name), tuple(col.name for col in c.columns))
            for c in table.constraints
            if isinstance(c, sa.UniqueConstraint)
        ),
        "foreign_keys": sorted(
            (
                str(fk.name),
                tuple(fk.column_keys),
                fk.referred_table.name,
                tuple(e.column.name for e in fk.elements),
                (fk.ondelete or "NO ACTION").upper(),
            )
            for fk in table.foreign_key_constraints
        ),
        "checks": sorted(
            str(c.name) for c in table.constraints if isinstance(c, sa.CheckConstraint)
        ),
        "indexes": sorted(
            (str(index.name), _index_columns(index, index_sorting.get(str(index.name), {})))
            for index in table.indexes
        ),
    }


def _index_columns(index: sa.Index, sorting: dict[str, Any]) -> tuple[str, ...]:
    columns = []
    for expression in index.expressions:
        if isinstance(expression, UnaryExpression):  # the mirror's posted_at.desc()
            columns.append(f"{expression.element.name} desc")
        elif isinstance(expression, sa.Column):
            # Reflection keeps DESC beside the index, not in its expressions.
            name = expression.name
            columns.append(f"{name} desc" if "desc" in sorting.get(name, ()) else name)
        else:
            raise AssertionError(f"unexpected index expression {expression!r}")
    return tuple(columns)


def test_root_schema_sql_is_the_packaged_file_itself() -> None:
    """One schema: the top-level schema.sql is a link to the file the package ships and reads."""
    root = REPO_ROOT / "schema.sql"
    assert root.is_symlink()
    assert root.resolve() == (REPO_ROOT / "archer" / "db" / "schema.sql").resolve()
    assert schema_sql() == root.read_text(encoding="utf-8")


def test_schema_sql_and_tables_agree_on_postgres(postgres_url: str) -> None:
    """Applying schema.sql and reflecting it gives exactly the tables archer.db.tables declares."""
    engine = make_engine(postgres_url, pool_size=1)
    try:
        init_schema(engine)
        reflected = sa.MetaData()
        with engine.connect() as conn:
            reflected.reflect(conn)
            inspector = sa.inspect(conn)
            sorting = {
                str(index["name"]): dict(index.get("column_sorting", {}))
                for table in reflected.tables
                for index in inspector.get_indexes(table)
            }
    finally:
        engine.dispose()

    assert sorted(reflected.tables) == sorted(metadata.tables)
    for name, declared in metadata.tables.items():
        assert _describe(reflected.tables[name], sorting) == _describe(declared, {}), name


def test_tables_cover_the_calls_contract() -> None:
    """The calls table carries the counters and token columns the store relies on."""
    calls = metadata.tables["calls"]
    for column in ("frames_in", "frames_out", "frames_dropped"):
        assert calls.c[column].nullable is False
        assert calls.c[column].server_default is not None
    assert calls.c.stream_token_hash.nullable is True
    assert calls.c.call_sid.unique is True


def test_init_schema_is_idempotent(database_url: str) -> None:
    """Running init_schema twice on either backend leaves every declared table in place."""
    engine = make_engine(database_url, pool_size=1)
    try:
        init_schema(engine)
        init_schema(engine)
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            present = set(inspector.get_table_names())
            columns = {
                table: [c["name"] for c in inspector.get_columns(table)]
                for table in metadata.tables
            }
    finally:
        engine.dispose()

    assert present == set(metadata.tables)
    for table, declared in metadata.tables.items():
        assert columns[table] == [c.name for c in declared.columns]


def test_every_statement_in_schema_sql_is_idempotent() -> None:
    """Every statement in schema.sql is a CREATE ... IF NOT EXISTS or an ALTER TABLE ... ADD
    COLUMN IF NOT EXISTS for a column newer than its table (it runs on every deploy)."""
    code = "\n".join(line.split("--", 1)[0] for line in schema_sql().splitlines())
    statements = [s.strip().upper() for s in code.split(";") if s.strip()]
    creates = [s for s in statements if not s.startswith("ALTER TABLE")]
    # One per table and one per index the mirror declares: nothing in the SQL goes unchecked.
    assert len(creates) == len(metadata.tables) + sum(
        len(table.indexes) for table in metadata.tables.values()
    )
    for statement in statements:
        assert statement.startswith(
            ("CREATE TABLE IF NOT EXISTS", "CREATE INDEX IF NOT EXISTS", "ALTER TABLE")
        )
        if statement.startswith("ALTER TABLE"):
            assert " ADD COLUMN IF NOT EXISTS " in statement
