"""Two worker "hosts" that share only PostgreSQL, Redis and an S3 server (moto, started by the
tests on 127.0.0.1): separate DATA_DIRs, separate blob caches, no shared disk.

A train job killed with SIGKILL (worker and work horse) on worker 1 mid-run is taken over by
worker 2 once its lease expires, resumes from the training state worker 1 left in S3 (saved on
the wall clock, mid-epoch), and finishes with the same S_NN as an uninterrupted run of the same
request; a measure job on worker 2 reads the milestone checkpoint worker 1 wrote.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from core.db import engine_for
from core.tables import Job
from tests.conftest import postgres_schema_url, postgres_target
from tests.e2e.procs import clean_env, free_port, http_ok, spawn, stop, wait_until
from tests.e2e.stack import migrate, new_key, wait_for_job
from tests.e2e.test_worker_e2e import MIXTURE, TINY_NETWORK
from tests.redis_fixtures import skip_or_fail_unavailable
from tests.s3_fixtures import s3_artifact_env, s3_keys

LEASE = "2"  # seconds: takeover within LEASE_SECONDS + RECONCILE_INTERVAL_SECONDS
TRAIN = {"type": "train", "network": TINY_NETWORK, "queue": "cpu",
         "training": {"epochs": 40, "batch_size": 50, "lr": 1e-3, "milestones": [2],
                      "stop_when_converged": False},
         "measurement": {"n_times": 16, "n_samples": 1024}}


@pytest.fixture
def postgres_url(postgres_probe: str | None) -> Iterator[str]:
    if postgres_probe is not None:
        skip_or_fail_unavailable("PostgreSQL (TEST_POSTGRES_URL)", postgres_probe)
    schema = f"two_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_target())
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = postgres_schema_url(postgres_target(), schema)
    try:
        migrate(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.postgres
@pytest.mark.redis_server
def test_job_killed_on_one_host_resumes_on_another(
        tmp_path: Path, postgres_url: str, external_redis_url: str, s3_server: str,
        s3_bucket: str) -> None:
    prefix = f"two-{uuid.uuid4().hex[:8]}/"
    shared = {"DATABASE_URL": postgres_url, "REDIS_URL": external_redis_url,
              **s3_artifact_env(s3_server, s3_bucket, prefix),
              "PROGRESS_INTERVAL_SECONDS": "0.25", "LEASE_SECONDS": LEASE,
              "RECONCILE_INTERVAL_SECONDS": "1", "TRAINING_STATE_INTERVAL_SECONDS": "1"}
    dirs = {name: tmp_path / name for name in ("api", "host1", "host2")}
    logs = {name: tmp_path / f"{name}.log" for name in dirs}
    envs = {name: clean_env(DATA_DIR=str(d), **shared) for name, d in dirs.items()}
    key = new_key(postgres_url)
    port = free_port()
    api = spawn(["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
                envs["api"], logs["api"])
    worker1 = spawn(["-m", "worker", "--queues", "cpu", "--name", "host1"], envs["host1"],
                    logs["host1"])
    worker2 = None
    base = f"http://127.0.0.1:{port}"

    def worker_of(job_id: str) -> str | None:
        with Session(engine_for(postgres_url)) as s:
            job = s.get(Job, job_id)
            return None if job is None else job.worker_name

    def attempts_of(job_id: str) -> int:
        with Session(engine_for(postgres_url)) as s:
            job = s.get(Job, job_id)
            return -1 if job is None else int(job.attempts)

    def logs_text() -> str:
        return "\n".join(f"--- {n}\n{_log(p)[-5000:]}" for n, p in logs.items())

    try:
        assert wait_until(lambda: http_ok(f"{base}/readyz") or api.poll() is not None, 300), \
            logs_text()
        with httpx.Client(base_url=base, timeout=30.0,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            dataset_id = c.post("/v1/datasets", json=MIXTURE).json()["id"]
            killed = c.post("/v1/jobs", json={**TRAIN, "dataset_id": dataset_id}).json()["id"]
            state_key = f"training-state/{killed}.state"

            def mid_run() -> bool:
                doc = c.get(f"/v1/jobs/{killed}").json()
                return (bool(doc["milestones"]) and (doc["progress"] or {}).get("epoch", 0) >= 4
                        and state_key in s3_keys(s3_server, s3_bucket, prefix))

            assert wait_until(mid_run, 300, 0.2), logs_text()
            before_kill = c.get(f"/v1/jobs/{killed}").json()
            assert before_kill["status"] == "running" and worker_of(killed) == "host1"
            os.killpg(worker1.pid, signal.SIGKILL)  # the worker and its work horse, no goodbye
            worker1.wait(10)
            killed_epoch = before_kill["progress"]["epoch"]
            milestone_ckpt = before_kill["milestones"][0]["checkpoint_id"]

            worker2 = spawn(["-m", "worker", "--queues", "cpu", "--name", "host2"],
                            envs["host2"], logs["host2"])
            done = wait_for_job(c, killed, 400)
            assert done["status"] == "succeeded", (done, logs_text())
            assert worker_of(killed) == "host2" and attempts_of(killed) == 2
            resumed = re.search(rf"job {killed}: resuming from its state after epoch (\d+), "
                                r"step (\d+)", _log(logs["host2"]))
            assert resumed, logs_text()
            resumed_epoch = int(resumed.group(1))
            assert 2 <= resumed_epoch  # not from zero (the progress read before the kill may lag the saved state)
            assert state_key not in s3_keys(s3_server, s3_bucket, prefix)  # removed at the end

            # the same request, uninterrupted, on host 2
            clean = c.post("/v1/jobs", json={**TRAIN, "dataset_id": dataset_id}).json()["id"]
            clean_doc = wait_for_job(c, clean, 400)
            assert clean_doc["status"] == "succeeded", logs_text()
            s_killed = c.get(f"/v1/measurements/{done['measurement_id']}").json()
            s_clean = c.get(f"/v1/measurements/{clean_doc['measurement_id']}").json()
            assert s_killed["neural_entropy"]["nats"] == s_clean["neural_entropy"]["nats"]

            # host 2 measures the checkpoint host 1 wrote (it exists only in S3)
            measure = c.post("/v1/jobs", json={"type": "measure", "checkpoint_id": milestone_ckpt,
                                               "dataset_id": dataset_id, "queue": "cpu",
                                               "measurement": {"n_times": 16,
                                                               "n_samples": 1024}}).json()
            mdoc = wait_for_job(c, measure["id"], 300)
            assert mdoc["status"] == "succeeded" and worker_of(measure["id"]) == "host2", \
                logs_text()
            ckpt_sha = c.get(f"/v1/checkpoints/{milestone_ckpt}").json()["sha256"]
        # no shared disk: no host has a local artifact directory; host 2 cached what it read
        for d in dirs.values():
            assert not (d / "artifacts").exists()
        cached = {p.name for p in (dirs["host2"] / "blob-cache").glob("??/*")}
        assert ckpt_sha in cached and (dirs["host1"] / "blob-cache").exists()
        print(f"\nkilled at epoch {killed_epoch} of {TRAIN['training']['epochs']} "  # noqa: T201
              f"(progress), resumed on host 2 after epoch {resumed_epoch} step "
              f"{resumed.group(2)}; S_NN {s_killed['neural_entropy']['nats']!r} == "
              f"{s_clean['neural_entropy']['nats']!r}")
    finally:
        stop(api)
        stop(worker1)
        stop(worker2)
