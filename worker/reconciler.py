"""The reconciler: the DB is the truth, Redis only transport. Re-enqueue what Redis lost.

A DB job is *lost* when it is
- `queued`, older than a grace period, and its RQ job is gone (or already ended): Redis was
  flushed or restarted (the bundled Redis keeps nothing on disk), or the enqueue never happened;
- `running` on a worker that is dead (its RQ worker key expired or was never there: the whole
  worker crashed, the machine rebooted), or on a live worker whose RQ job ended without the
  job finishing in the DB (the work horse was killed, e.g. for memory).
A lost job goes back to `queued` and onto its RQ queue under a fresh RQ id; its next run resumes
from the last milestone's training state. After `MAX_ATTEMPTS` runs it is failed instead.
Each change is fenced on the row's (status, attempts, worker_name), so two reconcilers
(one per worker) never both win.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.worker import Worker
from sqlalchemy import select, update

from core.db import rows_changed, session_scope
from core.queue import enqueue_job, redis_connection, rq_job_id
from core.tables import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # runs of one job (first + 2 resumes) before the reconciler gives up
QUEUED_GRACE_SECONDS = 60.0  # a queued job this young may still be on its way into Redis
_RQ_ALIVE = {"queued", "started", "deferred", "scheduled", "created"}


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)


def worker_alive(connection: Redis, worker_name: str | None) -> bool:
    """True when the RQ worker `worker_name` has a live key: not expired (a crashed worker's key
    expires after its TTL) and without the `death` mark a stopped worker leaves for 60 s."""
    if not worker_name:
        return False
    key = Worker.redis_worker_namespace_prefix + worker_name
    return bool(connection.exists(key)) and connection.hget(key, "death") is None


def rq_status(connection: Redis, rq_id: str) -> str | None:
    """RQ's status of job `rq_id`, or None when Redis does not know it."""
    try:
        status = RQJob.fetch(rq_id, connection=connection).get_status(refresh=False)
    except NoSuchJobError:
        return None
    return None if status is None else str(getattr(status, "value", status))


def lost_reason(job: Job, connection: Redis, now: datetime, grace: float) -> str | None:
    """Why `job` (queued or running in the DB) is lost, or None when it is on its way."""
    state = rq_status(connection, job.rq_job_id or job.id)
    if job.status == JobStatus.queued.value:
        if state in _RQ_ALIVE:
            return None
        if job.rq_job_id is None and (now - job.created_at) < timedelta(seconds=grace):
            return None  # the API may not have enqueued it yet
        return f"queued but its RQ job is {state or 'gone'}"
    if not worker_alive(connection, job.worker_name):
        return f"running on worker {job.worker_name!r}, which is gone"
    if state in _RQ_ALIVE:
        return None
    return f"running but its RQ job is {state or 'gone'}"


def reconcile(
    connection: Redis | None = None,
    *,
    grace_seconds: float = QUEUED_GRACE_SECONDS,
    max_attempts: int = MAX_ATTEMPTS,
) -> ReconcileReport:
    """Re-enqueue every lost job (or fail it after `max_attempts` runs); returns what changed."""
    conn = connection or redis_connection()
    report = ReconcileReport()
    now = utcnow()
    with session_scope() as session:
        candidates = session.scalars(
            select(Job).where(Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        ).all()
    for job in candidates:
        reason = lost_reason(job, conn, now, grace_seconds)
        if reason is None:
            continue
        fence = (
            (Job.id == job.id)
            & (Job.status == job.status)
            & (Job.attempts == job.attempts)
            & (
                Job.worker_name.is_(None)
                if job.worker_name is None
                else Job.worker_name == job.worker_name
            )
        )
        if job.cancel_requested:
            values: dict[str, object] = {
                "status": JobStatus.canceled.value,
                "finished_at": utcnow(),
                "progress": {**(job.progress or {}), "phase": "canceled"},
            }
            bucket = report.canceled
        elif job.attempts >= max_attempts:
            values = {
                "status": JobStatus.failed.value,
                "finished_at": utcnow(),
                "error": (
                    f"The job was lost {job.attempts} times (its worker stopped or was killed, "
                    "for example for lack of memory); giving up."
                ),
                "progress": {**(job.progress or {}), "phase": "failed"},
            }
            bucket = report.failed
        else:
            values = {
                "status": JobStatus.queued.value,
                "worker_name": None,
                "rq_job_id": rq_job_id(job.id, job.attempts),
                "progress": {**(job.progress or {}), "phase": "requeued", "eta_seconds": None},
            }
            bucket = report.requeued
        with session_scope() as session:
            won = rows_changed(session, update(Job).where(fence).values(**values)) == 1
        if not won:
            continue  # someone else changed it first
        log.warning("reconciler: job %s %s -> %s", job.id, reason, values["status"])
        if values["status"] == JobStatus.queued.value:
            enqueue_job(job.id, job.queue, attempt=job.attempts, connection=conn)
        bucket.append(job.id)
    return report
