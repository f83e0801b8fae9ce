"""The RQ job function `run_job(job_id)`: claim the DB row, run the train / measure / sample body,
and record the outcome. The DB row, not Redis, is the truth:

- claim: `queued -> running` in one fenced UPDATE (so a job enqueued twice runs once), recording
  started_at, worker_name, device and the attempt number; a job canceled while queued ends here;
- lease: the run's `worker.lease.RunLease` renews `heartbeat_at` (and accumulates
  `compute_seconds`) in a background thread, and fences every write of the run on its attempt;
- body: `JOB_BODIES[type]` (`worker.train_job.run_train`, `worker.measure_job.run_measure`,
  `worker.sample_job.run_sample`), which reads the resolved spec (`core.contract`), reports
  progress, does the heavy work and returns its *commit*: a function that stores the results in
  a session and returns the columns to set on success;
- feed: when the job belongs to a sweep, the sweep's next held job goes on the queue
  (`core.sweep_feed`), whatever the outcome;
- outcome: the commit and `succeeded` in one fenced transaction (so a run that dies in between
  leaves nothing behind), `canceled` when cancellation was asked for, or `failed` with a readable
  one-line error (the traceback goes to the log, never into the row). A run whose attempt was
  superseded (the reconciler took the job over) writes nothing and returns `superseded`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.contract import JobProgress, parse_job_spec
from core.db import rows_changed, session_scope
from core.queue import redis_connection
from core.settings import get_settings
from core.sweep_feed import feed_after_job
from core.tables import Job, JobStatus, JobType, utcnow
from worker.context import JobContext, current_worker_name
from worker.devices import job_device
from worker.errors import JobCanceled, readable_error
from worker.lease import JobSuperseded, RunLease
from worker.measure_job import run_measure
from worker.progress import ProgressReporter
from worker.resume import delete_training_state
from worker.sample_job import run_sample
from worker.train_job import run_train

log = logging.getLogger(__name__)
ROW_WAIT_SECONDS = 10.0  # how long to wait for a job row not yet committed by the API

Commit = Callable[[Session], dict[str, Any]]  # stores the results, returns the columns to set
JobBody = Callable[[JobContext], Commit]
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
                held=False,  # a held sweep job run by hand (it is normally released first)
                error=None,
                progress=JobProgress(phase="starting", fraction=0.0).model_dump(),
            ),
        ) == 1
    if not won:
        log.warning("job %s was claimed by someone else", job_id)
        return None
    settings = get_settings()
    lease = RunLease(job_id, attempt, settings.lease_seconds)
    reporter = ProgressReporter(job_id, settings.progress_interval_seconds, lease=lease)
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
        lease=lease,
    )


def _finish(
    job_id: str,
    attempt: int,
    status: JobStatus,
    values: dict[str, Any],
    *,
    from_status: JobStatus = JobStatus.running,
) -> bool:
    """Set a final status fenced on the current status and attempt (no lease: a job canceled
    while queued); True if written."""
    with session_scope() as session:
        return rows_changed(session, (
            update(Job)
            .where(Job.id == job_id, Job.status == from_status.value, Job.attempts == attempt)
            .values(status=status.value, finished_at=utcnow(), heartbeat_at=utcnow(), **values)
        )) == 1


def _end_run(ctx: JobContext, status: JobStatus, values: dict[str, Any],
             commit: Commit | None = None) -> bool:
    """In one transaction fenced on this run's attempt: `commit` (store the results) and the final
    status with `values`; compute_seconds gets the run's last unaccounted seconds. False (and
    nothing written) when the attempt was superseded."""
    ctx.lease.stop()
    try:
        with ctx.lease.session() as session:
            updates = commit(session) if commit is not None else {}
            session.execute(update(Job).where(Job.id == ctx.job_id).values(
                status=status.value, finished_at=utcnow(), **updates, **values))
    except JobSuperseded:
        return False
    return True


def run_job(job_id: str) -> str:
    """Run DB job `job_id` (train, measure or sample) and return its final status.

    Importable at module level by name (`worker.jobs.run_job`): RQ calls it in a work horse with
    the id only; everything else is read from the database.
    """
    device = job_device()
    try:
        ctx = claim(job_id, current_worker_name(), device)
        if ctx is None:
            return "skipped"
        log.info("job %s (%s) attempt %d on %s", job_id, ctx.type, ctx.attempt, device)
        ctx.lease.start()
        try:
            return _run(ctx)
        finally:
            ctx.lease.stop()
    finally:
        _feed_sweep_of(job_id)


def _feed_sweep_of(job_id: str) -> None:
    """A sweep's job left its window: put the sweep's next held job on the queue now (best effort:
    every reconciler pass feeds it otherwise)."""
    try:
        feed_after_job(job_id, redis_connection())
    except Exception:  # noqa: BLE001 - the run's outcome is recorded; never fail it now
        log.warning("job %s: could not feed its sweep", job_id, exc_info=True)


def _run(ctx: JobContext) -> str:
    job_id = ctx.job_id
    try:
        commit = JOB_BODIES[ctx.type](ctx)
    except JobSuperseded:
        log.warning("job %s: attempt %d was superseded (taken over); stopped without writing",
                    job_id, ctx.attempt)
        return "superseded"
    except JobCanceled:
        written = _finish_run(ctx, JobStatus.canceled, {"progress": ctx.reporter.final("canceled")})
        log.info("job %s canceled", job_id)
        return JobStatus.canceled.value if written else "superseded"
    except Exception as exc:  # noqa: BLE001 - every failure is recorded
        # (SystemExit / KeyboardInterrupt pass: the row stays `running`, its lease expires and the
        # reconciler re-enqueues the job, which resumes from its last saved state)
        message = readable_error(exc, device=ctx.device)
        log.exception("job %s failed: %s", job_id, message)
        written = _finish_run(ctx, JobStatus.failed,
                              {"error": message, "progress": ctx.reporter.final("failed")})
        return JobStatus.failed.value if written else "superseded"
    written = _finish_run(ctx, JobStatus.succeeded,
                          {"progress": ctx.reporter.final("done", fraction=1.0)}, commit)
    if not written:
        log.warning("job %s: attempt %d finished, but the job was taken over meanwhile; its "
                    "results were not stored", job_id, ctx.attempt)
        return "superseded"
    return JobStatus.succeeded.value


def _finish_run(ctx: JobContext, status: JobStatus, values: dict[str, Any],
                commit: Commit | None = None) -> bool:
    """End the run (`_end_run`) and, when it was still current, clean up after it."""
    written = _end_run(ctx, status, values, commit)
    if written:
        _cleanup(ctx)
    return written


def _cleanup(ctx: JobContext) -> None:
    if ctx.type == JobType.train.value:
        delete_training_state(ctx.job_id)
