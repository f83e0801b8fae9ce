"""The reconciler: the DB is the truth, Redis only transport. Re-enqueue what was lost.

A DB job is *lost* when it is
- `queued`, older than a grace period, and its RQ job is gone (or already ended): Redis was
  flushed or restarted (the bundled Redis keeps nothing on disk), or the enqueue never happened;
- `running` and its run's lease expired: `heartbeat_at` (renewed every LEASE_SECONDS / 3 by the
  run itself, see `worker.lease`) is older than LEASE_SECONDS - its worker died, was killed or
  stopped, or its machine went away; or
- `running` while its RQ job has ended (finished, failed, stopped): the work horse died under a
  live worker (killed for memory, timed out) without finishing the row.
Liveness is read from the database, not from Redis, so flushing Redis never makes a live run
look dead (a run that lost its RQ record keeps renewing its lease and finishes normally).

A lost job goes back to `queued` and onto its RQ queue under a fresh RQ id; its next run resumes
from its saved training state. After `MAX_ATTEMPTS` runs it is failed instead. Each change is
fenced on the row's (status, attempts, worker_name), so two reconcilers (one per worker) never
both win, and a run that is taken over is fenced out of every later write (`worker.lease`).

Each worker runs `reconcile` on its own clock (`worker.service_worker.Maintenance`), so a job
whose worker died is taken over within LEASE_SECONDS + RECONCILE_INTERVAL_SECONDS (plus one pass
and a claim) by any live worker of its queue, idle or busy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from sqlalchemy import select, update

from core.db import rows_changed, session_scope
from core.queue import enqueue_job, redis_connection, rq_job_id
from core.settings import get_settings
from core.tables import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # runs of one job (first + 2 resumes) before the reconciler gives up
QUEUED_GRACE_SECONDS = 60.0  # a queued job this young may still be on its way into Redis
REQUEUE_GRACE_SECONDS = 10.0  # a job the reconciler put back this recently is on its way too
_RQ_ALIVE = {"queued", "started", "deferred", "scheduled", "created"}
_RQ_ENDED = {"finished", "failed", "stopped", "canceled"}


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)


def rq_status(connection: Redis, rq_id: str) -> str | None:
    """RQ's status of job `rq_id`, or None when Redis does not know it."""
    try:
        status = RQJob.fetch(rq_id, connection=connection).get_status(refresh=False)
    except NoSuchJobError:
        return None
    return None if status is None else str(getattr(status, "value", status))


def lease_expired(job: Job, now: datetime, lease_seconds: float) -> bool:
    """True when the run of `job` has not renewed its lease for `lease_seconds` (or never did)."""
    beat = job.heartbeat_at
    return beat is None or (now - beat) > timedelta(seconds=lease_seconds)


def lost_reason(job: Job, connection: Redis, now: datetime, grace: float,
                lease_seconds: float) -> str | None:
    """Why `job` (queued or running in the DB) is lost, or None when it is on its way."""
    if job.status == JobStatus.running.value:
        if lease_expired(job, now, lease_seconds):
            age = "never" if job.heartbeat_at is None else \
                f"{(now - job.heartbeat_at).total_seconds():.1f} s ago"
            return f"running on {job.worker_name!r}, whose lease expired (last renewed {age})"
        state = rq_status(connection, job.rq_job_id or job.id)
        if state in _RQ_ENDED:
            return f"running but its RQ job is {state}: the work horse died"
        return None
    state = rq_status(connection, job.rq_job_id or job.id)
    if state in _RQ_ALIVE:
        return None
    if job.rq_job_id is None and (now - job.created_at) < timedelta(seconds=grace):
        return None  # the API may not have enqueued it yet
    requeued_at = job.heartbeat_at  # set by a reconciler's requeue, just before its enqueue
    if requeued_at is not None and (now - requeued_at) < timedelta(seconds=REQUEUE_GRACE_SECONDS):
        return None
    return f"queued but its RQ job is {state or 'gone'}"


def reconcile(
    connection: Redis | None = None,
    *,
    grace_seconds: float = QUEUED_GRACE_SECONDS,
    max_attempts: int = MAX_ATTEMPTS,
    lease_seconds: float | None = None,
) -> ReconcileReport:
    """Re-enqueue every lost job (or fail it after `max_attempts` runs); returns what changed.
    `lease_seconds` defaults to Settings.lease_seconds."""
    conn = connection or redis_connection()
    lease = float(lease_seconds if lease_seconds is not None else get_settings().lease_seconds)
    report = ReconcileReport()
    now = utcnow()
    with session_scope() as session:
        candidates = session.scalars(
            select(Job).where(Job.status.in_([JobStatus.queued.value, JobStatus.running.value]),
                              Job.held.is_(False))  # held: its sweep enqueues it (sweep_feed)
        ).all()
    for job in candidates:
        reason = lost_reason(job, conn, now, grace_seconds, lease)
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
        if job.status == JobStatus.running.value and lease_expired(job, now, lease):
            # ... and still expired at the write: a renewal in between keeps the run its job
            cutoff = now - timedelta(seconds=lease)
            fence = fence & (Job.heartbeat_at.is_(None) | (Job.heartbeat_at < cutoff))
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
                "heartbeat_at": utcnow(),  # marks the requeue (REQUEUE_GRACE_SECONDS)
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
