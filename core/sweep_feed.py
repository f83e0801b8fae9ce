"""A sweep feeds its jobs to the queue: at most a window of them are on RQ or running at once.

A sweep's grid can hold hundreds of train jobs. Put on the FIFO queue all at once they would
stand in front of every later submission (a sweep counts as one submission against
MAX_QUEUED_JOBS_PER_OWNER, and should take one submission's turn, not hundreds). So only the
first *window* of a sweep's jobs go on RQ at submission; the others are stored `queued` and
`held` (progress phase `waiting_in_sweep`), and the sweep releases them in grid order as its
jobs in flight end:

- the window is SWEEP_JOBS_IN_FLIGHT, or when that is 0 (the default) the number of live workers
  listening on the sweep's queue (at least 1): every worker can run one of the sweep's jobs,
  and a job submitted later waits behind at most one of the sweep's jobs per worker;
- the worker that ends one of a sweep's jobs (succeeded, failed, canceled, or found canceled
  while queued) feeds that sweep at once (`feed_after_job`), so the next job is on the queue
  before the worker asks for one; the job goes to the back of the queue, behind what others
  submitted meanwhile;
- every reconciler pass of every worker feeds every sweep with held jobs (`feed_all`), which
  covers a worker that died between ending a job and feeding, a job canceled through the API,
  and a window that grew with new workers.

A feed locks the sweep's row (`core.db.lock_for_write`) while it counts and releases, so
concurrent feeds never release more than the window. A released job is committed `queued`, not
held, with its RQ id and `heartbeat_at` (the reconciler's requeue mark) before it goes on RQ; if
Redis refuses it, the reconciler enqueues it on a later pass, as any queued job Redis lost.
"""

from __future__ import annotations

import logging

from redis import Redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.contract import JobProgress
from core.db import lock_for_write, rows_changed, session_scope
from core.queue import enqueue_job, rq_job_id
from core.settings import Settings, get_settings
from core.tables import Job, JobStatus, Sweep, utcnow
from core.workers import live_workers

log = logging.getLogger(__name__)

HELD_PHASE = "waiting_in_sweep"
UNFINISHED = (JobStatus.queued.value, JobStatus.running.value)


def held_progress() -> dict[str, object]:
    """The progress document of a held job."""
    return JobProgress(phase=HELD_PHASE).model_dump()


def feed_window(session: Session, queue_name: str, settings: Settings | None = None) -> int:
    """How many of a sweep's jobs on `queue_name` may be on RQ or running at once (>= 1)."""
    settings = settings or get_settings()
    if settings.sweep_jobs_in_flight > 0:
        return settings.sweep_jobs_in_flight
    workers = live_workers(session, settings.lease_seconds)
    return max(1, sum(1 for w in workers if queue_name in (w.queues or [])))


def _release(session: Session, sweep_id: str, settings: Settings) -> list[Job]:
    """Within the session's transaction: lock the sweep, mark the next held jobs (grid order) as
    released, up to the window; returns them (not yet on RQ)."""
    if not lock_for_write(session, Sweep, sweep_id):
        return []
    unfinished = session.scalars(
        select(Job).where(Job.sweep_id == sweep_id, Job.status.in_(UNFINISHED))).all()
    held = [j for j in unfinished if j.held and j.status == JobStatus.queued.value]
    if not held:
        return []
    grid_order = {p["job_id"]: i for i, p in enumerate(session.get_one(Sweep, sweep_id).points)}
    held.sort(key=lambda j: grid_order[j.id])
    room = feed_window(session, held[0].queue, settings) - (len(unfinished) - len(held))
    released = []
    for job in held[:max(0, room)]:
        won = rows_changed(session, update(Job).where(
            Job.id == job.id, Job.held.is_(True), Job.status == JobStatus.queued.value,
        ).values(held=False, rq_job_id=rq_job_id(job.id, job.attempts), heartbeat_at=utcnow(),
                 progress=JobProgress(phase="queued").model_dump())) == 1
        if won:
            released.append(job)
    return released


def feed_sweep(sweep_id: str, connection: Redis) -> list[str]:
    """Release the sweep's next held jobs onto RQ, up to its window; returns their ids."""
    with session_scope() as session:
        released = [(job.id, job.queue, job.attempts)
                    for job in _release(session, sweep_id, get_settings())]
    for job_id, queue_name, attempts in released:
        try:
            enqueue_job(job_id, queue_name, attempt=attempts, connection=connection)
        except Exception:  # noqa: BLE001 - committed as queued: the reconciler enqueues it later
            log.warning("sweep %s: job %s released but not enqueued (Redis); the reconciler "
                        "will enqueue it", sweep_id, job_id, exc_info=True)
    if released:
        log.info("sweep %s: released %s", sweep_id, [r[0] for r in released])
    return [r[0] for r in released]


def feed_after_job(job_id: str, connection: Redis) -> list[str]:
    """Feed the sweep of job `job_id` (after one of its runs ended); [] when it has none."""
    with session_scope() as session:
        sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    return [] if sweep_id is None else feed_sweep(sweep_id, connection)


def feed_all(connection: Redis) -> dict[str, list[str]]:
    """Feed every sweep that has held jobs; {sweep id: released job ids} of those that released."""
    with session_scope() as session:
        sweep_ids = session.scalars(select(Job.sweep_id).distinct().where(
            Job.held.is_(True), Job.status == JobStatus.queued.value,
            Job.sweep_id.is_not(None))).all()
    out: dict[str, list[str]] = {}
    for sweep_id in sweep_ids:
        released = feed_sweep(str(sweep_id), connection)
        if released:
            out[str(sweep_id)] = released
    return out

