"""Jobs: submit (resolve, store `queued`, enqueue), list, get, cancel, documents.

Order of submission: the row is committed BEFORE the id goes on RQ (so a worker never picks up an
id the database does not have yet). If Redis cannot take it, the row is removed again and the
client gets 503: a failed submission changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from rq import Worker
from rq.job import Job as RQJob
from sqlalchemy import delete, distinct, func, select, update
from sqlalchemy.orm import Session

from app.errors import ProblemError, conflict, not_found
from app.schemas.jobs import (
    JobPublic,
    MeasureJobCreate,
    MilestonePublic,
    SampleJobCreate,
    TrainJobCreate,
)
from app.services import idempotency, job_requests
from app.services.pages import newest_first_page
from core import queue as rq_client
from core import sweep_feed
from core.contract import Convergence, JobProgress, QueueName, parse_job_spec
from core.db import lock_for_write
from core.settings import Settings, get_settings
from core.tables import Job, JobMilestone, JobStatus, Owner, utcnow
from core.workers import live_queues

log = logging.getLogger(__name__)

JobRequest = TrainJobCreate | MeasureJobCreate | SampleJobCreate


def choose_queue(requested: str, connection: Redis) -> QueueName:
    """`gpu` or `cpu`; `auto` means gpu when a live RQ worker listens on the gpu queue."""
    if requested == "gpu":
        return "gpu"
    if requested == "cpu":
        return "cpu"
    try:
        for worker in Worker.all(connection=connection):
            if "gpu" in worker.queue_names():
                return "gpu"
    except Exception:  # noqa: BLE001 - no worker registry: fall back to cpu
        log.warning("could not list RQ workers; using the cpu queue", exc_info=True)
    return "cpu"


def new_job(session: Session, owner: Owner, req: JobRequest, settings: Settings,
            queue_name: QueueName, *, sweep_id: str | None = None) -> Job:
    """Resolve `req` into a `queued` job row, added to the session (not committed)."""
    dataset_id: str | None = None
    checkpoint_id: str | None = None
    spec: job_requests.ResolvedSpec
    if isinstance(req, TrainJobCreate):
        spec, dataset = job_requests.resolve_train(session, owner, req, settings, queue_name)
        dataset_id = dataset.id
    elif isinstance(req, MeasureJobCreate):
        spec, dataset, checkpoint = job_requests.resolve_measure(session, owner, req, settings,
                                                                 queue_name)
        dataset_id, checkpoint_id = dataset.id, checkpoint.id
    else:
        spec, checkpoint = job_requests.resolve_sample(session, owner, req, settings, queue_name)
        checkpoint_id = checkpoint.id
    job = Job(owner_id=owner.id, type=req.type, status=JobStatus.queued.value, queue=queue_name,
              dataset_id=dataset_id, input_checkpoint_id=checkpoint_id,
              request=spec.model_dump(mode="json"), sweep_id=sweep_id,
              progress=JobProgress(phase="queued").model_dump())
    session.add(job)
    return job


def enqueue_new(session: Session, jobs: Sequence[Job], connection: Redis, *,
                on_failure: Callable[[Session], None] | None = None) -> None:
    """Put committed `queued` rows on RQ in order and record their RQ ids. If Redis refuses one,
    every row of `jobs` is deleted again (ids already on RQ are dropped; a worker that took one
    finds no row and does nothing), `on_failure` runs in the same commit, and the client gets
    503: a failed submission changes nothing.

    Once every id is on RQ the submission has succeeded, whatever happens next: recording the
    RQ ids is best effort (a database that is busy at that moment leaves `rq_job_id` empty,
    which the reconciler tolerates; the worker's claim is fenced, so the job still runs once).
    """
    enqueued: list[str] = []
    for job in jobs:
        try:
            rq_id = rq_client.enqueue_job(job.id, job.queue, connection=connection)
        except Exception as exc:  # noqa: BLE001 - Redis down or refusing
            log.error("could not enqueue job %s: %s", job.id, exc)
            for rq_id in enqueued:
                _drop_from_queue(rq_id, connection)
            session.execute(delete(Job).where(Job.id.in_([j.id for j in jobs])))
            if on_failure is not None:
                on_failure(session)
            session.commit()
            raise ProblemError(503, "Service Unavailable",
                               "the job queue (Redis) is not reachable; nothing was created, "
                               "retry later", headers={"Retry-After": "10"}) from None
        enqueued.append(rq_id)
    try:
        for job, rq_id in zip(jobs, enqueued, strict=True):
            session.execute(update(Job).where(Job.id == job.id, Job.rq_job_id.is_(None))
                            .values(rq_job_id=rq_id))
        session.commit()
    except Exception:  # noqa: BLE001 - the jobs are committed and queued: never fail now
        session.rollback()
        log.warning("jobs %s are queued but their RQ ids were not recorded",
                    [j.id for j in jobs], exc_info=True)


QUEUED_CAP_RETRY_AFTER_SECONDS = 30


def queued_submissions(session: Session, owner: Owner) -> int:
    """The owner's queued submissions: queued jobs outside sweeps, plus one per sweep that still
    has a queued job."""
    queued = (Job.owner_id == owner.id, Job.status == JobStatus.queued.value)
    single = session.scalar(select(func.count()).select_from(Job)
                            .where(*queued, Job.sweep_id.is_(None))) or 0
    sweeps = session.scalar(select(func.count(distinct(Job.sweep_id)))
                            .where(*queued, Job.sweep_id.is_not(None))) or 0
    return int(single) + int(sweeps)


def check_queued_cap(session: Session, owner: Owner, settings: Settings) -> None:
    """429 + Retry-After when the owner already has MAX_QUEUED_JOBS_PER_OWNER queued
    submissions. The owner's row is write-locked first (`core.db.lock_for_write`), so
    concurrent submissions of one owner are counted one after the other, on PostgreSQL and on
    SQLite."""
    lock_for_write(session, Owner, owner.id)
    cap = settings.max_queued_jobs_per_owner
    n = queued_submissions(session, owner)
    if n >= cap:
        raise ProblemError(
            429, "Too Many Requests",
            f"you have {n} queued submissions, the limit is {cap} (setting "
            "MAX_QUEUED_JOBS_PER_OWNER); retry once some have started",
            headers={"Retry-After": str(QUEUED_CAP_RETRY_AFTER_SECONDS)},
            limit=cap, limit_setting="MAX_QUEUED_JOBS_PER_OWNER")


SUBMIT_ENDPOINT = "POST /v1/jobs"


def submit(session: Session, owner: Owner, req: JobRequest, settings: Settings,
           connection: Redis, idempotency_key: str | None = None) -> tuple[JobPublic, bool]:
    """Resolve `req`, create the job row `queued`, commit, and enqueue its id.

    Returns the job document and whether it is a replay of an earlier submission with the same
    `Idempotency-Key`. The document is built before the commit (a new job has no milestones),
    so nothing after the commit can turn a persisted, queued job into an error answer.
    """
    fp = idempotency.fingerprint(req)
    prior = idempotency.prior_resource(session, owner, idempotency_key, SUBMIT_ENDPOINT, fp, Job)
    if prior is not None:
        return job_public(session, prior), True
    check_queued_cap(session, owner, settings)
    job = new_job(session, owner, req, settings, choose_queue(req.queue, connection))
    session.flush()
    doc = job_public(session, job)
    job_id, replayed = idempotency.commit_or_replay(session, owner, idempotency_key,
                                                    SUBMIT_ENDPOINT, fp, job.id, 202)
    if replayed:  # a concurrent request with the same key committed first
        return job_public(session, get_owned(session, owner, job_id)), True
    enqueue_new(session, [job], connection,
                on_failure=lambda s: idempotency.forget(s, owner, idempotency_key))
    return doc, False


# ---- queries ----
def get_owned(session: Session, owner: Owner, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.owner_id != owner.id:
        raise not_found("job", job_id)
    return job


def list_owned(session: Session, owner: Owner, status: str | None, job_type: str | None,
               limit: int, offset: int) -> tuple[list[Job], int]:
    conds = [Job.owner_id == owner.id]
    if status is not None:
        conds.append(Job.status == status)
    if job_type is not None:
        conds.append(Job.type == job_type)
    return newest_first_page(session, Job, conds, limit, offset)


def sample_grids(session: Session, owner: Owner, checkpoint_ids: Sequence[str]) -> dict[str, str]:
    """checkpoint id -> the newest succeeded sample job of the owner with a PNG grid of it."""
    if not checkpoint_ids:
        return {}
    rows = session.execute(
        select(Job.input_checkpoint_id, Job.id).where(
            Job.owner_id == owner.id, Job.type == "sample",
            Job.status == JobStatus.succeeded.value, Job.samples_png_sha256.is_not(None),
            Job.input_checkpoint_id.in_(list(checkpoint_ids)))
        .order_by(Job.created_at.desc(), Job.id.desc())).all()
    out: dict[str, str] = {}
    for checkpoint_id, job_id in rows:
        if checkpoint_id is not None:
            out.setdefault(checkpoint_id, job_id)
    return out


def cancel(session: Session, owner: Owner, job_id: str, connection: Redis | None) -> Job:
    """Ask a job to stop: a queued job is canceled now; a running one stops between steps."""
    job = get_owned(session, owner, job_id)
    if JobStatus(job.status).is_final:
        raise conflict(f"job {job.id} has already finished ({job.status})", status_now=job.status)
    request_cancel(session, job, connection)
    session.commit()
    if job.sweep_id is not None and connection is not None:
        _feed_quietly(job.sweep_id, connection)
    session.refresh(job)
    return job


def _feed_quietly(sweep_id: str, connection: Redis) -> None:
    """Let the sweep release its next held job (a canceled job left its window): best effort,
    the workers' reconciler passes feed it otherwise."""
    try:
        sweep_feed.feed_sweep(sweep_id, connection)
    except Exception:  # noqa: BLE001 - the cancel is committed; never fail it now
        log.warning("could not feed sweep %s after a cancel", sweep_id, exc_info=True)


def request_cancel(session: Session, job: Job, connection: Redis | None) -> None:
    """Cancel an unfinished job (not committed): queued -> canceled at once (fenced on queued,
    and dropped from RQ); a running one gets `cancel_requested` and stops between steps."""
    job.cancel_requested = True
    if job.status == JobStatus.queued.value:
        # only if still queued in the DB (the worker may have just taken it)
        result = session.execute(
            update(Job).where(Job.id == job.id, Job.status == JobStatus.queued.value)
            .values(status=JobStatus.canceled.value, finished_at=utcnow(), cancel_requested=True,
                    progress={"phase": "canceled"})
        )
        if getattr(result, "rowcount", 0) and connection is not None and job.rq_job_id:
            _drop_from_queue(job.rq_job_id, connection)


def _drop_from_queue(rq_job_id: str, connection: Redis) -> None:
    try:
        RQJob.fetch(rq_job_id, connection=connection).cancel()
    except Exception:  # noqa: BLE001 - best effort: the worker also checks the DB status
        log.info("could not remove RQ job %s from its queue", rq_job_id, exc_info=True)


# ---- documents ----
def _progress(job: Job, live_queues: set[str] | None = None) -> JobProgress:
    """The job's progress document; a queued job on a queue no live worker listens on (per
    `live_queues`, the `workers` table) says `waiting_for_worker`."""
    raw: dict[str, Any] = {"phase": job.status, **(job.progress or {})}
    if job.status == JobStatus.succeeded.value:
        raw["fraction"] = 1.0
    if (job.status == JobStatus.queued.value and live_queues is not None
            and job.queue not in live_queues):
        raw["phase"] = "waiting_for_worker"
    return JobProgress.model_validate(raw)


def job_links(job: Job) -> dict[str, str]:
    links = {"self": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"}
    if job.measurement_id:
        links["measurement"] = f"/v1/measurements/{job.measurement_id}"
        links["curve"] = f"/v1/measurements/{job.measurement_id}/curve"
        links["plot"] = f"/v1/measurements/{job.measurement_id}/plot.png"
    if job.checkpoint_id:
        links["checkpoint"] = f"/v1/checkpoints/{job.checkpoint_id}"
    if job.dataset_id:
        links["dataset"] = f"/v1/datasets/{job.dataset_id}"
    if job.type == "train":
        links["convergence_plot"] = f"/v1/jobs/{job.id}/convergence.png"
    if job.sweep_id:
        links["sweep"] = f"/v1/sweeps/{job.sweep_id}"
    if job.type == "sample":
        links["samples_npy"] = f"/v1/jobs/{job.id}/samples.npy"
        links["samples_png"] = f"/v1/jobs/{job.id}/samples.png"
    return links


def _live_queues_for(session: Session, jobs: Sequence[Job],
                     lease_seconds: float | None) -> set[str] | None:
    """The live workers' queues (`workers` table, leases of `lease_seconds`, default
    Settings.lease_seconds) when one of `jobs` is queued, else None (not read)."""
    if not any(job.status == JobStatus.queued.value for job in jobs):
        return None
    lease = get_settings().lease_seconds if lease_seconds is None else lease_seconds
    return live_queues(session, lease)


def jobs_public(session: Session, jobs: Sequence[Job]) -> list[JobPublic]:
    """The public documents of `jobs` (a page of a list): the live queues are read once."""
    live = _live_queues_for(session, jobs, None)
    return [job_public(session, job, live=live) for job in jobs]


def job_public(session: Session, job: Job, lease_seconds: float | None = None, *,
               live: set[str] | None = None) -> JobPublic:
    """The public document of `job`. A queued job reads the live workers' queues (see
    `_live_queues_for`) unless `live` gives them already."""
    if live is None:
        live = _live_queues_for(session, [job], lease_seconds)
    milestones = session.scalars(
        select(JobMilestone).where(JobMilestone.job_id == job.id).order_by(JobMilestone.epoch)
    ).all()
    return JobPublic(
        id=job.id, type=job.type, status=job.status, queue=job.queue,  # type: ignore[arg-type]
        progress=_progress(job, live), attempts=job.attempts, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, error=job.error, cancel_requested=job.cancel_requested,
        dataset_id=job.dataset_id, input_checkpoint_id=job.input_checkpoint_id,
        measurement_id=job.measurement_id, checkpoint_id=job.checkpoint_id,
        milestones=[MilestonePublic(epoch=m.epoch, measurement_id=m.measurement_id,
                                    checkpoint_id=m.checkpoint_id) for m in milestones],
        device=job.device, compute_seconds=job.compute_seconds, sweep_id=job.sweep_id,
        links=job_links(job),
        request=parse_job_spec(job.request),
        convergence=None if job.convergence is None
        else Convergence.model_validate(job.convergence),
    )


def convergence_of(session: Session, owner: Owner, job_id: str) -> Convergence:
    """A train job's convergence document; 404 for other jobs, 409 before the first estimate."""
    job = get_owned(session, owner, job_id)
    if job.type != "train":
        raise not_found("convergence of train job", job_id)
    if job.convergence is None:
        raise conflict(f"job {job.id} has no S_NN estimate yet ({job.status})",
                       status_now=job.status)
    return Convergence.model_validate(job.convergence)


def samples_artifact(session: Session, owner: Owner, job_id: str, kind: str) -> str:
    """sha256 of a sample job's `npy` or `png` output; 409 until it has succeeded."""
    job = get_owned(session, owner, job_id)
    if job.type != "sample":
        raise not_found("samples of job", job_id)
    if job.status != JobStatus.succeeded.value:
        raise conflict(f"job {job.id} is {job.status}; samples exist once it has succeeded",
                       status_now=job.status)
    sha = job.samples_sha256 if kind == "npy" else job.samples_png_sha256
    if not sha:
        what = "a PNG grid (only image samples have one)" if kind == "png" else "samples"
        raise not_found(f"{what} for job", job_id)
    return sha
