"""``archer keys create|revoke|list`` and ``archer call``, as real processes on a real database.

The key is printed once, as the last line, and only its hash reaches the database; ``list``
never shows it; ``archer call`` queues exactly as ``POST /calls`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from archer.db.outbound import hash_key
from archer.db.tables import metadata
from tests.helpers import run_archer as archer


def _everything(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(row)
                for table in metadata.sorted_tables
                for row in conn.execute(table.select())
            )
    finally:
        engine.dispose()


def test_keys_are_printed_once_and_stored_as_hashes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/archer.db"
    env = {"DATABASE_URL": url, "LOG_FORMAT": "console"}
    created = archer("keys", "create", "fraud-engine", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("archer_")
    assert len(key) > 40
    assert key not in created.stderr
    everything = _everything(url)
    assert key not in everything
    assert hash_key(key) in everything
    listed = archer("keys", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "fraud-engine" in listed.stdout
    assert "live" in listed.stdout
    assert key not in listed.stdout + listed.stderr
    assert hash_key(key) not in listed.stdout
    again = archer("keys", "create", "fraud-engine", env=env, cwd=tmp_path)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert archer("keys", "revoke", "fraud-engine", env=env, cwd=tmp_path).returncode == 0
    assert "revoked" in archer("keys", "list", env=env, cwd=tmp_path).stdout
    twice = archer("keys", "revoke", "fraud-engine", env=env, cwd=tmp_path)
    assert twice.returncode == 1
    assert twice.stderr.strip() == "archer: no live API key named 'fraud-engine'"


def test_archer_call_queues_like_post_calls(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/archer.db", "LOG_FORMAT": "console"}
    assert archer("db", "seed", env=env, cwd=tmp_path).returncode == 0
    args = ("call", "+15555550101", "--purpose", "fraud_alert", "--transaction", "1")
    queued = archer(*args, "--idempotency-key", "k1", env=env, cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    answer = json.loads(queued.stdout)
    assert answer["status"] == "queued"
    repeated = archer(*args, "--idempotency-key", "k1", env=env, cwd=tmp_path)
    assert json.loads(repeated.stdout) == answer
    bad = archer(
        "call", "555", "--purpose", "fraud_alert", "--transaction", "1", env=env, cwd=tmp_path
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "archer: 'to' must be an E.164 number: + and 7 to 15 digits"
    unknown = archer(
        "call",
        "+15555550101",
        "--purpose",
        "fraud_alert",
        "--transaction",
        "9999",
        env=env,
        cwd=tmp_path,
    )
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1] == "archer: no transaction with id 9999"
