"""The RQ job function `run_job(job_id)`: claim the DB row, run the train / measure / sample body,
and record the outcome. The DB row, not Redis, is the truth:

- claim: `queued -> running` in one fenced UPDATE (so a job enqueued twice runs once), recording
  started_at, worker_name, device and the attempt number; a job canceled while queued ends here;
- body: `JOB_BODIES[type]` (`worker.train_job.run_train`, `worker.measure_job.run_measure`,
  `worker.sample_job.run_sample`), which reads the resolved spec (`core.contract`), reports
  progress and returns the columns to set on success;
- outcome: `succeeded` with compute_seconds, `canceled` when cancellation was asked for, or `failed`
  with a readable one-line error (the traceback goes to the log, never into the row). Every final
  write is fenced on (status running, attempts) so a job taken over by the reconciler is not
  overwritten by a stale run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from core.contract import JobProgress, parse_job_spec
from core.db import rows_changed, session_scope
from core.settings import get_settings
from core.tables import Job, JobStatus, JobType, utcnow
from worker.context import JobContext, current_worker_name
from worker.devices import job_device
from worker.errors import JobCanceled, readable_error
from worker.measure_job import run_measure
from worker.progress import ProgressReporter
from worker.resume import delete_training_state
from worker.sample_job import run_sample
from worker.train_job import run_train

log = logging.getLogger(__name__)
ROW_WAIT_SECONDS = 10.0  # how long to wait for a job row not yet committed by the API

JobBody = Callable[[JobContext], dict[str, Any]]
JOB_BODIES: dict[str, JobBody] = {
    JobType.train.value: run_train,
    JobType.measure.value: run_measure,
    JobType.sample.value: run_sample,
}


def _load_row(job_id: str) -> Job | None:
    deadline = time.monotonic() + ROW_WAIT_SECONDS
    while True:
        with session_scope() as session:
            job = session.get(Job, job_id)
            if job is not None:
                session.expunge(job)
                return job
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def claim(job_id: str, worker_name: str, device: str) -> JobContext | None:
    """Move the job `queued -> running`; None when it is not ours to run (gone, final, taken)."""
    job = _load_row(job_id)
    if job is None:
        log.error("job %s: no such row; nothing to do", job_id)
        return None
    if job.status != JobStatus.queued.value:
        log.warning("job %s is %s, not queued; not running it", job_id, job.status)
        return None
    if job.cancel_requested:
        _finish(job_id, job.attempts, JobStatus.canceled,
                {"progress": JobProgress(phase="canceled").model_dump()},
                from_status=JobStatus.queued)
        return None
    attempt = job.attempts + 1
    now = utcnow()
    with session_scope() as session:
        won = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued.value,
                   Job.attempts == job.attempts)
            .values(
                status=JobStatus.running.value,
                attempts=attempt,
                started_at=job.started_at or now,
                heartbeat_at=now,
                worker_name=worker_name,
                device=device,
                error=None,
                progress=JobProgress(phase="starting", fraction=0.0).model_dump(),
            ),
        ) == 1
    if not won:
        log.warning("job %s was claimed by someone else", job_id)
        return None
    reporter = ProgressReporter(job_id, get_settings().progress_interval_seconds)
    return JobContext(
        job_id=job_id,
        owner_id=job.owner_id,
        spec=parse_job_spec(job.request),
        dataset_id=job.dataset_id,
        input_checkpoint_id=job.input_checkpoint_id,
        attempt=attempt,
        device=device,
        worker_name=worker_name,
        reporter=reporter,
    )


def _finish(
    job_id: str,
    attempt: int,
    status: JobStatus,
    values: dict[str, Any],
    *,
    from_status: JobStatus = JobStatus.running,
) -> bool:
    """Set the final status (fenced on the current status and attempt); True if written."""
    with session_scope() as session:
        return rows_changed(session, (
            update(Job)
            .where(Job.id == job_id, Job.status == from_status.value, Job.attempts == attempt)
            .values(status=status.value, finished_at=utcnow(), heartbeat_at=utcnow(), **values)
        )) == 1


def _previous_compute_seconds(job_id: str) -> float:
    with session_scope() as session:
        value = session.execute(select(Job.compute_seconds).where(Job.id == job_id)).scalar()
    return float(value or 0.0)


def run_job(job_id: str) -> str:
    """Run DB job `job_id` (train, measure or sample) and return its final status.

    Importable at module level by name (`worker.jobs.run_job`): RQ calls it in a work horse with
    the id only; everything else is read from the database.
    """
    device = job_device()
    ctx = claim(job_id, current_worker_name(), device)
    if ctx is None:
        return "skipped"
    log.info("job %s (%s) attempt %d on %s", job_id, ctx.type, ctx.attempt, device)
    earlier = _previous_compute_seconds(job_id)
    try:
        updates = JOB_BODIES[ctx.type](ctx)
    except JobCanceled:
        _finish(job_id, ctx.attempt, JobStatus.canceled,
                {"progress": ctx.reporter.final("canceled"),
                 "compute_seconds": earlier + ctx.elapsed()})
        _cleanup(ctx)
        log.info("job %s canceled", job_id)
        return JobStatus.canceled.value
    except Exception as exc:  # noqa: BLE001 - every failure is recorded
        # (SystemExit / KeyboardInterrupt pass: the row stays `running` and the reconciler
        # re-enqueues the job, which resumes from its last saved state)
        message = readable_error(exc, device=device)
        log.exception("job %s failed: %s", job_id, message)
        _finish(job_id, ctx.attempt, JobStatus.failed,
                {"error": message, "progress": ctx.reporter.final("failed"),
                 "compute_seconds": earlier + ctx.elapsed()})
        _cleanup(ctx)
        return JobStatus.failed.value
    written = _finish(job_id, ctx.attempt, JobStatus.succeeded,
                      {**updates, "progress": ctx.reporter.final("done", fraction=1.0),
                       "compute_seconds": earlier + ctx.elapsed()})
    _cleanup(ctx)
    if not written:
        log.warning("job %s: finished, but the row was taken over meanwhile", job_id)
    return JobStatus.succeeded.value


def _cleanup(ctx: JobContext) -> None:
    if ctx.type == JobType.train.value:
        delete_training_state(ctx.job_id)
