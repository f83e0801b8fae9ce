"""Migrations 0002 and 0003 on a database with data: stored train requests gain the paper's recipe
fields (0002) and n_train / subset_seed
(and lose them on the way down), and nothing that references `jobs` is lost either way (on SQLite
a copy-and-drop of `jobs` would cascade-delete measurements and milestones)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from core.contract import parse_job_spec
from core.migrations import alembic_config
from tests.conftest import postgres_schema_url, postgres_target
from tests.worker.seed import TINY_MEASUREMENT, TINY_MLP

OLD_TRAIN = {  # a train request as revision 0001 stored it
    "type": "train", "dataset_id": "ds_1", "data_sha256": "0" * 64,
    "process": {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0},
    "network": TINY_MLP,
    "training": {"epochs": 2, "batch_size": 50, "lr": 1e-3, "num_steps": 2, "seed": 0,
                 "milestones": [], "weighting": "unit", "grad_clip": None, "ema_decay": None},
    "measurement": TINY_MEASUREMENT, "queue": "cpu",
}
SAMPLE = {"type": "sample", "checkpoint_id": "ckpt_1", "n": 4, "seed": 0, "solver": "heun",
          "steps": 10, "labels": None, "queue": "cpu"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path,
              postgres_probe: str | None) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    if postgres_probe is not None:
        from tests.redis_fixtures import skip_or_fail_unavailable

        skip_or_fail_unavailable("PostgreSQL (TEST_POSTGRES_URL)", postgres_probe)
    schema = f"mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_target())
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield postgres_schema_url(postgres_target(), schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _requests(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, request FROM jobs ORDER BY id")).all()
    engine.dispose()
    return {r[0]: r[1] if isinstance(r[1], dict) else json.loads(r[1]) for r in rows}


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return n


def test_upgrade_and_downgrade_keep_the_data(blank_url: str) -> None:
    cfg = alembic_config(blank_url)
    command.upgrade(cfg, "0001")
    engine = create_engine(blank_url)
    now = "2026-11-29 00:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO owners (id, name, created_at) VALUES ('own_1', 'a', :t)"),
                     {"t": now})
        for job_id, request in (("job_1", OLD_TRAIN), ("job_2", SAMPLE)):
            conn.execute(text(
                "INSERT INTO jobs (id, owner_id, type, status, queue, request, cancel_requested, "
                "attempts, created_at) VALUES (:id, 'own_1', :type, 'succeeded', 'cpu', :req, "
                "false, 1, :t)"), {"id": job_id, "type": request["type"],
                                   "req": json.dumps(request), "t": now})
        conn.execute(text("INSERT INTO measurements (id, owner_id, job_id, summary, "
                          "reproducibility, created_at) VALUES ('meas_1', 'own_1', 'job_1', "
                          "'{}', '{}', :t)"), {"t": now})
        conn.execute(text("INSERT INTO job_milestones (job_id, epoch) VALUES ('job_1', 1)"))
    engine.dispose()

    command.upgrade(cfg, "head")
    up = _requests(blank_url)
    # 0002: trained before recipes existed, so with the paper's; 0003: no subset
    paper = {"recipe": "paper", "lr_schedule": "constant", "lr_final_fraction": 0.0,
             "warmup_steps": 0, "log_snr_share": 0.0, "parametrization": "entropy_matching",
             "stop_when_converged": False, "convergence_tolerance": 0.02}
    assert up["job_1"] == {**OLD_TRAIN, "training": {**OLD_TRAIN["training"], **paper},
                           "n_train": None, "subset_seed": 0}
    assert parse_job_spec(up["job_1"]).n_train is None  # valid for the new contract
    assert up["job_2"] == SAMPLE
    assert (_count(blank_url, "measurements"), _count(blank_url, "job_milestones")) == (1, 1)
    engine = create_engine(blank_url)
    assert "sweep_id" in {c["name"] for c in inspect(engine).get_columns("jobs")}
    engine.dispose()

    command.downgrade(cfg, "0001")
    assert _requests(blank_url) == {"job_1": OLD_TRAIN, "job_2": SAMPLE}
    assert (_count(blank_url, "measurements"), _count(blank_url, "job_milestones")) == (1, 1)
    engine = create_engine(blank_url)
    insp = inspect(engine)
    assert "sweep_id" not in {c["name"] for c in insp.get_columns("jobs")}
    assert "sweeps" not in insp.get_table_names()
    engine.dispose()
