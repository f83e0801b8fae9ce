"""Sweeps: one request, one train job per grid point; status, cancel, delete and the document.

Submission resolves every grid point into a normal, fully resolved train job (the same code as
`POST /v1/jobs`), writes the sweep row and all job rows in one transaction, and only then
enqueues the first window of them; the sweep feeds the rest to the queue as its jobs end
(`core.sweep_feed`). A failure to enqueue removes them all again: 503, nothing created. An error at
one grid point rejects the whole sweep with 422 naming the grid axis or base field at fault.
The sweep's status is derived from its jobs' statuses; nothing about it is stored but the
request and the grid coordinates of each job.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from redis import Redis
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.errors import ProblemError, conflict, not_found, over_limit, unprocessable
from app.schemas.jobs import TrainJobCreate
from app.schemas.sweeps import (
    SweepCounts,
    SweepCreate,
    SweepJob,
    SweepPublic,
    SweepSummary,
)
from app.services import idempotency
from app.services import jobs as jobs_service
from app.services.datasets import get_owned as get_dataset
from app.services.job_requests import training_points
from app.services.labels import network_label, process_label
from app.services.pages import newest_first_page
from app.services.sweep_tables import sweep_table
from core import sweep_feed
from core.contract import NetworkSpec, ProcessSpec
from core.settings import Settings
from core.tables import Job, JobStatus, Owner, Sweep

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


@dataclass(frozen=True)
class GridPoint:
    n_train: int | None
    process: ProcessSpec | None
    network: NetworkSpec | None
    seed: int | None


def grid_points(req: SweepCreate) -> list[GridPoint]:
    """The grid in submission order: n_train (as given), process, network, seed."""
    g = req.grid
    axes: tuple[list[Any], ...] = (g.n_train or [None], g.process or [None], g.network or [None],
                                   g.seed or [None])
    return [GridPoint(*combo) for combo in itertools.product(*axes)]


def _merged_network(base: NetworkSpec, entry: NetworkSpec | None) -> dict[str, Any]:
    doc = {k: v for k, v in base.model_dump().items() if not (k == "arch" and v is None)}
    if entry is not None:
        doc.update({k: v for k, v in entry.model_dump().items() if not (k == "arch" and v is None)})
    return doc


def _check_request(req: SweepCreate, settings: Settings) -> None:
    g, base = req.grid, req.base
    size = math.prod(len(axis) for axis in (g.n_train, g.process, g.network, g.seed) if axis)
    if size > settings.max_sweep_jobs:
        raise over_limit("grid", size, settings.max_sweep_jobs, "max_sweep_jobs")
    labels = {
        "n_train": [str(v) for v in g.n_train or []],
        "seed": [str(v) for v in g.seed or []],
        "process": [process_label(p.model_dump()) for p in g.process or []],
        "network": [network_label(_merged_network(NetworkSpec.model_validate({}), n))
                    for n in g.network or []],
    }
    for axis, values in labels.items():
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise unprocessable(f"grid.{axis} repeats {', '.join(repeated)}", f"grid.{axis}")
    if g.n_train and base.n_train is not None:
        raise unprocessable("n_train is an axis of this sweep's grid; leave it out of base",
                            "base.n_train")
    if g.seed and "seed" in base.training.model_fields_set:
        raise unprocessable("seed is an axis of this sweep's grid; leave training.seed out of "
                            "base", "base.training.seed")
    if g.process and "process" in base.model_fields_set:
        raise unprocessable("process is an axis of this sweep's grid; leave it out of base",
                            "base.process")
    if "subset_seed" in base.model_fields_set and base.subset_seed != req.subset_seed:
        raise unprocessable("a sweep's subset_seed is given at its top level, not in base",
                            "base.subset_seed")


def _epoch_factor(req: SweepCreate, n: int, n_max: int) -> float:
    """How many times base.training.epochs a job on `n` points trains (training_budget)."""
    if req.training_budget == "epochs":
        return 1.0
    batch = req.base.training.recipe_fields()["batch_size"]
    return math.ceil(n_max / batch) / math.ceil(n / batch)


def point_request(req: SweepCreate, point: GridPoint, n_points: int, n_max: int
                  ) -> TrainJobCreate:
    """The train request of one grid point: base, with the point's values set."""
    # only what was given: a training field left out must stay out, so the recipe fills it in
    doc = req.base.model_dump(mode="json", exclude_unset=True)
    doc.setdefault("training", {})
    doc["type"] = "train"
    doc["subset_seed"] = req.subset_seed
    if point.n_train is not None:
        doc["n_train"] = point.n_train
    if point.seed is not None:
        doc["training"]["seed"] = point.seed
    if point.process is not None:
        doc["process"] = point.process.model_dump(mode="json")
    doc["network"] = _merged_network(req.base.network, point.network)
    factor = _epoch_factor(req, point.n_train or n_points, n_max)
    if factor != 1.0:
        epochs = max(1, round(req.base.training.epochs * factor))
        doc["training"]["epochs"] = epochs
        doc["training"]["milestones"] = sorted({min(epochs, max(1, round(m * factor)))
                                                for m in req.base.training.milestones})
    return TrainJobCreate.model_validate(doc)


def _at_point(exc: ProblemError, req: SweepCreate, point: GridPoint) -> ProblemError:
    """The error of one grid point's train request, renamed to the sweep's own fields."""
    g = req.grid
    field = exc.field or ""
    head = field.split(".")[0]
    if head == "n_train" and g.n_train:
        field = "grid.n_train"
    elif field == "training.seed" and g.seed:
        field = "grid.seed"
    elif head == "process" and g.process:
        field = "grid." + field
    elif head == "network" and g.network:
        field = "grid." + field
    elif field:
        field = "base." + field
    where = ", ".join(f"{k}={v}" for k, v in (
        ("n_train", point.n_train), ("seed", point.seed),
        ("process", None if point.process is None else process_label(point.process.model_dump())),
        ("network", None if point.network is None else network_label(
            _merged_network(NetworkSpec.model_validate({}), point.network))),
    ) if v is not None)
    detail = f"grid point {where}: {exc.detail}" if where else exc.detail
    return ProblemError(exc.status, exc.title, detail, field or None, headers=exc.headers,
                        **exc.extra)


SUBMIT_ENDPOINT = "POST /v1/sweeps"


def submit(session: Session, owner: Owner, req: SweepCreate, settings: Settings,
           connection: Redis, idempotency_key: str | None = None) -> tuple[SweepPublic, bool]:
    """Resolve every grid point, store the sweep and its jobs in one commit, then enqueue the
    first window of them (`core.sweep_feed`: the sweep feeds the others as its jobs end).

    Returns the sweep document (built before the commit, so nothing after it can fail a
    persisted sweep) and whether it replays an earlier submission with the same
    `Idempotency-Key`. The whole sweep counts as one submission against
    MAX_QUEUED_JOBS_PER_OWNER (429 + Retry-After)."""
    fp = idempotency.fingerprint(req)
    prior = idempotency.prior_resource(session, owner, idempotency_key, SUBMIT_ENDPOINT, fp,
                                       Sweep)
    if prior is not None:
        return sweep_public(session, prior), True
    _check_request(req, settings)
    jobs_service.check_queued_cap(session, owner, settings)
    dataset = get_dataset(session, owner, req.base.dataset_id, "base.dataset_id")
    n_points = training_points(dataset)
    n_max = max(req.grid.n_train or [req.base.n_train or n_points])
    queue_name = jobs_service.choose_queue(req.base.queue, connection)
    sweep = Sweep(owner_id=owner.id, request=req.model_dump(mode="json"), points=[])
    session.add(sweep)
    session.flush()
    jobs: list[Job] = []
    points: list[dict[str, Any]] = []
    for point in grid_points(req):
        train_req = point_request(req, point, n_points, n_max)
        try:
            job = jobs_service.new_job(session, owner, train_req, settings, queue_name,
                                       sweep_id=sweep.id)
        except ProblemError as exc:
            raise _at_point(exc, req, point) from None
        jobs.append(job)
        points.append({
            "n_train": train_req.n_train or n_points,
            "seed": train_req.training.seed,
            "process": process_label(train_req.process.model_dump()),
            "network": None if point.network is None else network_label(
                _merged_network(NetworkSpec.model_validate({}), point.network)),
            "epochs": train_req.training.epochs,
        })
    window = sweep_feed.feed_window(session, queue_name, settings)
    for job in jobs[window:]:  # the sweep feeds these to the queue as its jobs end
        job.held = True
        job.progress = sweep_feed.held_progress()
    session.flush()
    sweep.points = [{"job_id": job.id, **p} for job, p in zip(jobs, points, strict=True)]
    session.flush()
    doc = sweep_public(session, sweep)
    sweep_id, replayed = idempotency.commit_or_replay(session, owner, idempotency_key,
                                                      SUBMIT_ENDPOINT, fp, sweep.id, 202)
    if replayed:  # a concurrent request with the same key committed first
        return sweep_public(session, get_owned(session, owner, sweep_id)), True

    def forget_sweep(s: Session) -> None:
        s.execute(delete(Job).where(Job.sweep_id == sweep.id))  # the held ones
        s.execute(delete(Sweep).where(Sweep.id == sweep.id))
        idempotency.forget(s, owner, idempotency_key)

    jobs_service.enqueue_new(session, jobs[:window], connection, on_failure=forget_sweep)
    return doc, False


# ---- queries ----
def get_owned(session: Session, owner: Owner, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.owner_id != owner.id:
        raise not_found("sweep", sweep_id)
    return sweep


def list_owned(session: Session, owner: Owner, limit: int, offset: int
               ) -> tuple[list[Sweep], int]:
    return newest_first_page(session, Sweep, [Sweep.owner_id == owner.id], limit, offset)


def counts_of(session: Session, sweep_ids: list[str]) -> dict[str, SweepCounts]:
    """Job counts per status of each sweep (one grouped query)."""
    out = {sid: SweepCounts() for sid in sweep_ids}
    rows = session.execute(
        select(Job.sweep_id, Job.status, func.count()).where(Job.sweep_id.in_(sweep_ids))
        .group_by(Job.sweep_id, Job.status)).all()
    for sweep_id, status, n in rows:
        counts = out[str(sweep_id)]
        setattr(counts, str(status), int(n))
        counts.total += int(n)
    return out


def derive_status(c: SweepCounts) -> str:
    """running while any job is unfinished (queued when none has started); then succeeded (all),
    canceled (any canceled), failed (none succeeded) or partial (some failed, the rest
    succeeded)."""
    if c.queued or c.running:
        return "running" if c.running or c.succeeded or c.failed or c.canceled else "queued"
    if c.succeeded == c.total:
        return "succeeded"
    if c.canceled:
        return "canceled"
    return "failed" if c.succeeded == 0 else "partial"


def _jobs_of(session: Session, sweep: Sweep) -> dict[str, Job]:
    return {j.id: j for j in session.scalars(select(Job).where(Job.sweep_id == sweep.id)).all()}


# ---- cancel, delete ----
def cancel(session: Session, owner: Owner, sweep_id: str, connection: Redis | None) -> Sweep:
    """Cancel every unfinished job of the sweep (queued at once, running between steps)."""
    sweep = get_owned(session, owner, sweep_id)
    active = [j for j in _jobs_of(session, sweep).values() if j.status in ACTIVE]
    if not active:
        raise conflict(f"sweep {sweep.id} has no unfinished jobs")
    for job in active:
        jobs_service.request_cancel(session, job, connection)
    session.commit()
    return sweep


def delete_owned(session: Session, owner: Owner, sweep_id: str) -> None:
    """Delete the sweep (409 while a job is unfinished); its jobs and results stay, unlinked."""
    sweep = get_owned(session, owner, sweep_id)
    active = sorted(j.id for j in _jobs_of(session, sweep).values() if j.status in ACTIVE)
    if active:
        raise conflict(f"sweep {sweep.id} has unfinished jobs {active[:5]}; cancel it first",
                       jobs=active)
    session.execute(update(Job).where(Job.sweep_id == sweep.id).values(sweep_id=None))
    session.delete(sweep)
    session.flush()


# ---- documents ----
def links(sweep: Sweep) -> dict[str, str]:
    base = f"/v1/sweeps/{sweep.id}"
    return {"self": base, "table_json": f"{base}/table?format=json",
            "table_csv": f"{base}/table?format=csv", "plot": f"{base}/plot.png",
            "cancel": f"{base}/cancel", "jobs": "/v1/jobs"}


def sweep_summary(sweep: Sweep, counts: SweepCounts) -> SweepSummary:
    return SweepSummary(id=sweep.id, status=derive_status(counts),  # type: ignore[arg-type]
                        created_at=sweep.created_at, counts=counts, links=links(sweep))


def sweep_public(session: Session, sweep: Sweep) -> SweepPublic:
    jobs = _jobs_of(session, sweep)
    counts = counts_of(session, [sweep.id])[sweep.id]
    entries = []
    for p in sweep.points:
        job = jobs.get(p["job_id"])
        if job is None:
            continue
        entries.append(SweepJob(
            id=job.id, status=job.status,  # type: ignore[arg-type]
            n_train=p["n_train"], seed=p["seed"], process=p["process"], network=p["network"],
            epochs=p["epochs"], error=job.error, measurement_id=job.measurement_id))
    rows, fits = sweep_table(session, sweep.points, jobs, bool(sweep.request["grid"].get("n_train")))
    return SweepPublic(id=sweep.id, status=derive_status(counts),  # type: ignore[arg-type]
                       created_at=sweep.created_at, counts=counts, jobs=entries, table=rows,
                       fits=fits, request=SweepCreate.model_validate(sweep.request),
                       links=links(sweep))
