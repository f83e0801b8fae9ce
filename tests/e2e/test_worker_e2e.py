"""End to end over HTTP: a real worker process and the API in a subprocess, on the embedded stack
(SQLite + bundled Redis) and on the production one (PostgreSQL + the Redis server) when it
answers: upload a 2-D mixture, train a tiny model, poll to `succeeded`, fetch the curve."""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from core.db import engine_for
from core.tables import Job
from tests.conftest import postgres_schema_url, postgres_target
from tests.e2e.procs import wait_until
from tests.e2e.stack import Stack, running_stack, wait_for_job
from tests.redis_fixtures import skip_or_fail_unavailable

MIXTURE = {"kind": "gaussian_mixture", "weights": [0.4, 0.6], "means": [[-1.0, 0.0], [1.5, 1.0]],
           "stds": [[0.5, 0.7], [0.6, 0.5]], "n_samples": 400, "seed": 0}
TINY_NETWORK = {"arch": "mlp", "fourier_features": 8, "width": 16, "hidden_widths": [16]}
JOB_TIMEOUT = 180.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ne-e2e-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def embedded_stack(short_dir: Path, bundled_redis, bundled_redis_url: str,
                   tmp_path: Path) -> Iterator[Stack]:
    url = f"sqlite:///{short_dir / 'e2e.sqlite3'}"
    with running_stack(url, bundled_redis_url, short_dir, tmp_path) as stack:
        yield stack


@pytest.fixture
def production_stack(short_dir: Path, external_redis_url: str, postgres_probe: str | None,
                     tmp_path: Path) -> Iterator[Stack]:
    if postgres_probe is not None:
        skip_or_fail_unavailable("PostgreSQL (TEST_POSTGRES_URL)", postgres_probe)
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_target())
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        url = postgres_schema_url(postgres_target(), schema)
        with running_stack(url, external_redis_url, short_dir, tmp_path) as stack:
            yield stack
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _live_cpu_workers(c) -> list[dict]:
    return c.get("/v1/workers").json()["queues"]["cpu"]


def _train_and_fetch_curve(stack: Stack) -> None:
    with stack.client() as c:
        # the worker process announces itself (its lease row): listed on cpu, computing on cpu
        assert wait_until(lambda: len(_live_cpu_workers(c)) == 1, 60), stack.log_text()
        listed = _live_cpu_workers(c)[0]
        assert listed["device"] == "cpu" and listed["queues"] == ["cpu"]
        assert c.get("/v1/workers").json()["queues"]["gpu"] == []
        r = c.post("/v1/datasets", json=MIXTURE)
        assert r.status_code == 201, r.text
        dataset_id = r.json()["id"]
        r = c.post("/v1/jobs", json={
            "type": "train", "dataset_id": dataset_id, "network": TINY_NETWORK,
            "training": {"epochs": 2, "batch_size": 50, "lr": 1e-3, "milestones": [1]},
            "measurement": {"n_times": 64, "n_samples": 4096}})
        assert r.status_code == 202, r.text
        assert r.headers["location"].endswith(f"/v1/jobs/{r.json()['id']}")
        job = wait_for_job(c, r.json()["id"], JOB_TIMEOUT, stack)
        assert job["status"] == "succeeded", (job, stack.log_text())
        assert job["device"] == "cpu" and job["compute_seconds"] > 0
        assert [m["epoch"] for m in job["milestones"]] == [1]

        m = c.get(f"/v1/measurements/{job['measurement_id']}").json()
        s_nn, s_tot = m["neural_entropy"]["nats"], m["total_entropy"]["nats"]
        assert math.isfinite(s_nn) and s_tot > 0
        assert m["reproducibility"]["torch_threads"] == 1  # WORKER_TORCH_THREADS of the stack

        rows = c.get(f"/v1/measurements/{job['measurement_id']}/curve",
                     params={"format": "json"}).json()
        rows = rows.get("points", rows.get("rows", rows)) if isinstance(rows, dict) else rows
        assert len(rows) >= 64
        r = c.get(f"/v1/measurements/{job['measurement_id']}/curve", params={"format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert len(table) >= 64
        assert float(table[-1]["cumulative"]) == pytest.approx(s_nn, rel=1e-6)
        assert c.get(f"/v1/checkpoints/{job['checkpoint_id']}/download").status_code == 200
    assert stack.worker.poll() is None, "the worker must keep running after a job"


def test_train_job_over_http_on_sqlite_and_bundled_redis(embedded_stack: Stack) -> None:
    _train_and_fetch_curve(embedded_stack)


@pytest.mark.postgres
@pytest.mark.redis_server
def test_train_job_over_http_on_postgres_and_redis_server(production_stack: Stack) -> None:
    _train_and_fetch_curve(production_stack)


def test_job_of_a_stopped_worker_resumes_on_the_next_worker(embedded_stack: Stack) -> None:
    """SIGTERM kills the running job with its worker; the next worker's reconciler re-enqueues it
    and it continues from its last saved training state (here: the milestone at epoch 2)."""
    stack = embedded_stack
    with stack.client() as c:
        dataset_id = c.post("/v1/datasets", json=MIXTURE).json()["id"]
        job_id = c.post("/v1/jobs", json={
            "type": "train", "dataset_id": dataset_id, "network": TINY_NETWORK,
            "training": {"epochs": 5000, "batch_size": 50, "milestones": [2]},
            "measurement": {"n_times": 16, "n_samples": 1024}}).json()["id"]
        assert wait_until(lambda: c.get(f"/v1/jobs/{job_id}").json()["milestones"], 120), \
            stack.log_text()
        stack.restart_worker()
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # the DB knows no better

        def resumed() -> bool:
            with Session(engine_for(stack.database_url)) as s:
                job = s.get(Job, job_id)
                return job.attempts == 2 and job.status == "running" and \
                    (job.progress or {}).get("phase") == "training"

        assert wait_until(resumed, 60), stack.log_text()
        doc = c.get(f"/v1/jobs/{job_id}").json()
        assert doc["progress"]["epoch"] >= 2  # continued after the milestone, not from 0
        assert [m["epoch"] for m in doc["milestones"]] == [2]
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
        assert wait_for_job(c, job_id, 60, stack)["status"] == "canceled"
