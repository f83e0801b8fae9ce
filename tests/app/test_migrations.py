"""The Alembic migrations build exactly app/tables.py, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from core.db import engine_for, make_engine
from core.migrations import alembic_config
from core.tables import Base

ROOT = Path(__file__).resolve().parents[2]


def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    """`database_url` was built by `alembic upgrade head` (see conftest)."""
    with engine_for(database_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.sqlite3'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    command.upgrade(cfg, "head")
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_cli_migrate_uses_data_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ARTIFACT_DIR")}
    env["DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True,
                   timeout=120, capture_output=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'neural-entropy.sqlite3'}")
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_fencing_migration_adds_and_removes_the_workers_table(tmp_path: Path) -> None:
    """0005 (fencing and worker leases) is the head: one step down drops `workers` and nothing
    else, and it comes back."""
    url = f"sqlite:///{tmp_path / 'fencing.sqlite3'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    engine = make_engine(url)
    before = set(inspect(engine).get_table_names())
    assert "workers" in before
    command.downgrade(cfg, "0005-1")
    assert set(inspect(engine).get_table_names()) == before - {"workers"}
    command.upgrade(cfg, "head")
    columns = {c["name"] for c in inspect(engine).get_columns("workers")}
    assert columns == {"name", "hostname", "pid", "queues", "device", "state", "current_job_id",
                       "started_at", "heartbeat_at"}


def test_0004_makes_owner_names_unique_and_adds_idempotency_keys(tmp_path: Path) -> None:
    """Owners that share a name keep it for the oldest; the others get ' (2)', ' (3)'."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'm4.sqlite3'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0003")
    engine = make_engine(url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for i, name in enumerate(["ann", "ann", "bob", "ann", "ann (2)"]):
            conn.execute(text("INSERT INTO owners (id, name, created_at) VALUES (:i, :n, :t)"),
                         {"i": f"own_{i}", "n": name, "t": t0 + timedelta(minutes=i)})
    command.upgrade(cfg, "0004")
    with engine.connect() as conn:
        names = dict(conn.execute(text("SELECT id, name FROM owners")).all())
    assert names == {"own_0": "ann", "own_1": "ann (3)", "own_2": "bob", "own_3": "ann (4)",
                     "own_4": "ann (2)"}
    assert "idempotency_keys" in inspect(engine).get_table_names()
    command.downgrade(cfg, "0003")
    assert "idempotency_keys" not in inspect(engine).get_table_names()
    engine.dispose()
