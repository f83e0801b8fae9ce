"""Fault injection with real worker processes (`python -m worker`) on a real database and Redis:
SQLite + the bundled Redis, and PostgreSQL + the Redis server at TEST_REDIS_URL.

- A worker killed with SIGKILL while it trains, beside an idle second worker: the job is taken
  over within the stated bound (LEASE_SECONDS + RECONCILE_INTERVAL_SECONDS, plus slack for a pass
  and a claim on a loaded machine) and ends with the same S_NN as an uninterrupted run; its
  compute_seconds count both attempts.
- Redis flushed while a train job runs: exactly one run, one checkpoint and one measurement per
  milestone plus the final ones, and the workers keep serving.
- A job taken over while its first run is still alive (what a wrongly judged takeover does): the
  first run stops at its next write (fenced on its attempt) and the job still ends with one
  checkpoint per milestone and one final measurement.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import func, select, update

from core.db import session_scope
from core.queue import enqueue_job, redis_connection, rq_job_id
from core.settings import get_settings
from core.tables import Checkpoint, Job, JobMilestone, JobStatus, Measurement
from tests.conftest import truncate_all
from tests.e2e.procs import alive, clean_env, descendants, spawn, stop, wait_until
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request

LEASE_SECONDS = 6.0  # renewed every 2 s; room for a starved CI box
RECONCILE_INTERVAL_SECONDS = 1.0
TAKEOVER_BOUND = LEASE_SECONDS + RECONCILE_INTERVAL_SECONDS
SLACK_SECONDS = 15.0  # a reconciler pass, an RQ hand-over, a fork and a claim on a busy CI box
JOB_TIMEOUT = 600.0  # generous: a shared CI box can be slow; a pass takes ~20 s when idle
EPOCHS = 8  # a training state after every epoch
FINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Faults:
    """Two workers (a, b) on one database, one Redis and one artifact directory."""

    env: dict[str, str]
    log_dir: Path
    redis: Redis
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        proc = spawn(["-m", "worker", "--queues", "cpu", "--name", name], self.env,
                     self.log_dir / f"{name}.log")
        self.workers[name] = proc
        return proc

    def wait_registered(self, *names: str) -> None:
        """Until each worker's RQ key exists (it has bootstrapped and listens)."""
        def ready() -> bool:
            return all(self.redis.exists(f"rq:worker:{n}") for n in names)
        assert wait_until(ready, 90), self.logs()

    def check_alive(self, *names: str) -> None:
        """Fail at once (with the logs) when one of the workers `names` exited."""
        for name in names or tuple(self.workers):
            assert self.workers[name].poll() is None, f"worker {name} exited\n{self.logs()}"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-5000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))


def row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def counts(job_id: str) -> dict[str, Any]:
    with session_scope() as session:
        def n(model: Any) -> int:
            return int(session.scalar(select(func.count()).select_from(model)
                                      .where(model.job_id == job_id)) or 0)
        epochs = session.scalars(select(JobMilestone.epoch).where(JobMilestone.job_id == job_id)
                                 .order_by(JobMilestone.epoch)).all()
        return {"checkpoints": n(Checkpoint), "measurements": n(Measurement),
                "milestones": list(epochs)}


def s_nn(job: Job) -> float:
    with session_scope() as session:
        meas = session.get(Measurement, job.measurement_id)
        assert meas is not None
        return float(meas.summary["neural_entropy"]["nats"])


def new_train_job(milestones: list[int] | None = None) -> str:
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner, n=200)
        request = train_request(ds, epochs=EPOCHS, milestones=milestones or [], batch_size=25)
        return make_job(session, owner, request).id


def submit(job_id: str, conn: Redis) -> None:
    rq_id = enqueue_job(job_id, "cpu", connection=conn)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(rq_job_id=rq_id))


def wait_final(job_id: str, faults: Faults, timeout: float = JOB_TIMEOUT,
               live: tuple[str, ...] = ()) -> Job:
    def final() -> bool:
        faults.check_alive(*live)
        return row(job_id).status in FINAL
    assert wait_until(final, timeout, 0.2), \
        f"{row(job_id).status}\n{faults.logs()}"
    return row(job_id)


def wait_training(job_id: str, faults: Faults, min_epoch: int) -> Job:
    """Until the job's first run is training past `min_epoch`."""
    def past() -> bool:
        faults.check_alive()
        job = row(job_id)
        p = job.progress or {}
        return job.status == "running" and p.get("phase") == "training" and \
            (p.get("epoch") or 0) >= min_epoch
    assert wait_until(past, JOB_TIMEOUT, 0.05), f"{row(job_id)}\n{faults.logs()}"
    return row(job_id)


@pytest.fixture
def faults(database_url: str, request: pytest.FixtureRequest,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    """SQLite + bundled Redis, or PostgreSQL + the Redis server; a shared artifact directory;
    a short lease and reconcile interval so the bound is seconds."""
    if database_url.startswith("sqlite"):
        redis_url = request.getfixturevalue("bundled_redis_url")
        Redis.from_url(redis_url).flushall()
    else:
        redis_url = request.getfixturevalue("external_redis_url")
    data_dir = Path(tempfile.mkdtemp(prefix="ne-faults-"))
    env = {"DATA_DIR": str(data_dir), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "ARTIFACT_DIR": str(data_dir / "artifacts"), "PROGRESS_INTERVAL_SECONDS": "0.25",
           "LEASE_SECONDS": str(LEASE_SECONDS),
           "RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL_SECONDS)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True)
    state = Faults(clean_env(**env), log_dir, redis_connection())
    try:
        yield state
    finally:
        for proc in state.workers.values():
            stop(proc)
        get_settings.cache_clear()
        truncate_all(database_url)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_sigkilled_worker_is_taken_over_within_the_bound_with_an_identical_result(
        faults: Faults) -> None:
    job_id = new_train_job()
    names = [f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"]
    for name in names:
        faults.start_worker(name)
    faults.wait_registered(*names)
    submit(job_id, faults.redis)

    first = wait_training(job_id, faults, min_epoch=2)  # a training state was saved at epoch 1
    victim_name = first.worker_name
    assert victim_name in names
    survivor_name = next(n for n in names if n != victim_name)
    victim = faults.workers[victim_name]
    horses = descendants(victim.pid)
    compute_before_kill = row(job_id).compute_seconds or 0.0
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(10)
    assert wait_until(lambda: not any(alive(p) for p in horses), 10), "the horse outlived it"

    def taken_over() -> bool:
        job = row(job_id)
        return job.attempts == 2 and job.worker_name == survivor_name
    assert wait_until(taken_over, TAKEOVER_BOUND + SLACK_SECONDS, 0.05), \
        f"not taken over within {TAKEOVER_BOUND + SLACK_SECONDS} s: {row(job_id)}\n{faults.logs()}"
    takeover = time.monotonic() - killed_at
    print(f"\ntakeover after SIGKILL: {takeover:.2f} s (bound {TAKEOVER_BOUND:.1f} s "
          f"= LEASE_SECONDS {LEASE_SECONDS} + RECONCILE_INTERVAL_SECONDS "
          f"{RECONCILE_INTERVAL_SECONDS})")

    done = wait_final(job_id, faults, live=(survivor_name,))
    assert done.status == "succeeded", (done.error, faults.logs())
    assert done.attempts == 2
    # the killed attempt's time is counted: at least what it had accounted before the kill
    assert compute_before_kill > 0 and done.compute_seconds is not None
    assert done.compute_seconds > compute_before_kill

    # the same request, uninterrupted, on the surviving worker: the same S_NN, bit for bit
    reference_id = new_train_job()
    with session_scope() as session:  # the very same request document
        session.execute(update(Job).where(Job.id == reference_id).values(
            request=row(job_id).request, dataset_id=row(job_id).dataset_id))
    submit(reference_id, faults.redis)
    reference = wait_final(reference_id, faults, live=(survivor_name,))
    assert reference.status == "succeeded" and reference.attempts == 1
    assert s_nn(done) == s_nn(reference)
    assert counts(job_id) == {"checkpoints": 1, "measurements": 1, "milestones": []}


def test_redis_flushed_while_a_train_job_runs_gives_exactly_one_run(faults: Faults) -> None:
    job_id = new_train_job(milestones=[3, 6])
    names = [f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"]
    for name in names:
        faults.start_worker(name)
    faults.wait_registered(*names)
    submit(job_id, faults.redis)
    wait_training(job_id, faults, min_epoch=4)  # past the first milestone
    faults.redis.flushdb()
    time.sleep(TAKEOVER_BOUND + 1.0)  # several reconciler passes of both workers see the flush

    done = wait_final(job_id, faults, live=tuple(names))
    assert done.status == "succeeded", (done.error, faults.logs())
    assert done.attempts == 1, faults.logs()  # one run: nobody took the live run over
    assert counts(job_id) == {"checkpoints": 3, "measurements": 3, "milestones": [3, 6]}
    assert all(p.poll() is None for p in faults.workers.values()), faults.logs()

    # and the workers still serve jobs after the flush
    after = new_train_job()
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == after).values(
            request={**row(after).request,
                     "training": {**row(after).request["training"], "epochs": 2}}))
    submit(after, faults.redis)
    assert wait_final(after, faults, 120, live=tuple(names)).status == "succeeded", faults.logs()


def test_a_run_taken_over_while_alive_stops_at_its_next_write(faults: Faults) -> None:
    """Take the job over by hand while its first run trains (as a reconciler that wrongly judged
    it lost would): the second run resumes, the first is fenced out, and nothing is doubled."""
    job_id = new_train_job(milestones=[3, 6])
    names = [f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"]
    for name in names:
        faults.start_worker(name)
    faults.wait_registered(*names)
    submit(job_id, faults.redis)
    first = wait_training(job_id, faults, min_epoch=4)
    with session_scope() as session:
        taken = session.execute(update(Job).where(
            Job.id == job_id, Job.status == JobStatus.running.value, Job.attempts == 1,
        ).values(status=JobStatus.queued.value, worker_name=None,
                 rq_job_id=rq_job_id(job_id, 1))).rowcount
    assert taken == 1
    # the first run's worker is busy with it: the other one takes the new RQ job
    enqueue_job(job_id, "cpu", attempt=1, connection=faults.redis)

    done = wait_final(job_id, faults, live=tuple(names))
    assert done.status == "succeeded", (done.error, faults.logs())
    assert done.attempts == 2
    assert counts(job_id) == {"checkpoints": 3, "measurements": 3, "milestones": [3, 6]}
    first_log = (faults.log_dir / f"{first.worker_name}.log").read_text()
    assert "superseded" in first_log, faults.logs()
