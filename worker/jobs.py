"""The RQ job function `run_job(job_id)`: claim the DB row, run the train / measure / sample body,
and record the outcome. The DB row, not Redis, is the truth:

- claim: `queued -> running` in one fenced UPDATE (so a job enqueued twice runs once), recording
  started_at, worker_name, device and the attempt number; a job canceled while queued ends here;
- body: `worker.train_job.run_train`, `worker.other_jobs.run_measure` / `run_sample`, which report
  progress and return the columns to set on success;
- outcome: `succeeded` with compute_seconds, `canceled` when cancellation was asked for, or `failed`
  with a readable one-line error (the traceback goes to the log, never into the row). Every final
  write is fenced on (status running, attempts) so a job taken over by the reconciler is not
  overwritten by a stale run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, Update, select, update
from sqlalchemy.orm import Session

from app.db import session_scope
from app.settings import get_settings
from app.tables import Job, JobStatus, JobType, utcnow
from worker.devices import job_device
from worker.errors import JobCanceled, readable_error
from worker.progress import ProgressReporter

log = logging.getLogger(__name__)
ROW_WAIT_SECONDS = 10.0  # how long to wait for a job row not yet committed by the API


@dataclass
class JobContext:
    """What a job body needs: the row's inputs (a snapshot), the device, the progress reporter."""

    job_id: str
    owner_id: str
    type: str
    request: dict[str, Any]
    dataset_id: str | None
    input_checkpoint_id: str | None
    attempt: int
    device: str
    worker_name: str
    reporter: ProgressReporter
    started: float = field(default_factory=time.monotonic)

    def check_canceled(self) -> None:
        """Raise JobCanceled when cancellation was asked for (checked between steps/phases)."""
        if self.reporter.cancel_requested():
            raise JobCanceled()


def rows_changed(session: Session, statement: Update) -> int:
    """Execute an UPDATE and return how many rows it changed (the fence of a state change)."""
    result = session.execute(statement)
    return int(cast(CursorResult[Any], result).rowcount)


def current_worker_name() -> str:
    """The RQ worker's name inside a work horse, else host:pid (direct calls, tests)."""
    return os.environ.get("RQ_WORKER_ID") or f"local:{socket.gethostname()}:{os.getpid()}"


def _body(job_type: str) -> Callable[[JobContext], dict[str, Any]]:
    if job_type == JobType.train.value:
        from worker.train_job import run_train

        return run_train
    if job_type == JobType.measure.value:
        from worker.other_jobs import run_measure

        return run_measure
    if job_type == JobType.sample.value:
        from worker.other_jobs import run_sample

        return run_sample
    raise ValueError(f"unknown job type {job_type!r}")


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
        _finish(job_id, job.attempts, JobStatus.canceled, {"progress": {"phase": "canceled"}},
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
                progress={"phase": "starting", "epoch": None, "epochs": None, "loss": None,
                          "fraction": 0.0, "eta_seconds": None},
            ),
        ) == 1
    if not won:
        log.warning("job %s was claimed by someone else", job_id)
        return None
    reporter = ProgressReporter(job_id, get_settings().progress_interval_seconds)
    return JobContext(
        job_id=job_id,
        owner_id=job.owner_id,
        type=job.type,
        request=dict(job.request or {}),
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
    progress_end = dict(ctx.reporter.current or {})
    try:
        updates = _body(ctx.type)(ctx)
    except JobCanceled:
        progress = {**(ctx.reporter.current or progress_end), "phase": "canceled",
                    "eta_seconds": None}
        _finish(job_id, ctx.attempt, JobStatus.canceled,
                {"progress": progress, "compute_seconds": earlier + ctx_elapsed(ctx)})
        _cleanup(ctx)
        log.info("job %s canceled", job_id)
        return JobStatus.canceled.value
    except Exception as exc:  # noqa: BLE001 - every failure is recorded
        # (SystemExit / KeyboardInterrupt pass: the row stays `running` and the reconciler
        # re-enqueues the job, which resumes from its last saved state)
        message = readable_error(exc, device=device)
        log.exception("job %s failed: %s", job_id, message)
        progress = {**(ctx.reporter.current or progress_end), "phase": "failed",
                    "eta_seconds": None}
        _finish(job_id, ctx.attempt, JobStatus.failed,
                {"error": message, "progress": progress,
                 "compute_seconds": earlier + ctx_elapsed(ctx)})
        _cleanup(ctx)
        return JobStatus.failed.value
    progress = {**(ctx.reporter.current or {}), "phase": "done", "fraction": 1.0,
                "eta_seconds": 0.0}
    written = _finish(job_id, ctx.attempt, JobStatus.succeeded,
                      {**updates, "progress": progress,
                       "compute_seconds": earlier + ctx_elapsed(ctx)})
    _cleanup(ctx)
    if not written:
        log.warning("job %s: finished, but the row was taken over meanwhile", job_id)
    return JobStatus.succeeded.value


def ctx_elapsed(ctx: JobContext) -> float:
    return round(time.monotonic() - ctx.started, 3)


def _cleanup(ctx: JobContext) -> None:
    if ctx.type == JobType.train.value:
        from worker.resume import delete_training_state

        delete_training_state(ctx.job_id)
