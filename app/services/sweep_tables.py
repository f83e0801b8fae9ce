"""A sweep's table and fits, from its jobs' measurements (the numerics: models.entropy.fits).

Rows: every measurement a sweep's jobs have made (milestones of any job, the final one of each
succeeded job), grouped by (n_train, process, network, epoch) and aggregated over the seeds
measured there. Fits: with an n_train axis, one per (process, network), of the final-epoch rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.schemas.sweeps import SweepFit, SweepRow
from core.contract import MeasurementSummary
from core.tables import Job, JobMilestone, JobStatus, Measurement
from models.entropy.fits import SeedAggregate, aggregate_seeds, log_fit

TABLE_COLUMNS = ("n_train", "process", "network", "epoch", "final", "n_seeds", "mean", "spread",
                 "stderr", "total_entropy", "bits_per_dim")


def _measured_epochs(session: Session, jobs: Mapping[str, Job]) -> dict[str, dict[int, str]]:
    """job id -> {epoch: measurement id}: milestones, and the final measurement of succeeded jobs."""
    out: dict[str, dict[int, str]] = defaultdict(dict)
    if not jobs:
        return out
    for m in session.scalars(select(JobMilestone).where(JobMilestone.job_id.in_(list(jobs)))):
        if m.measurement_id:
            out[m.job_id][m.epoch] = m.measurement_id
    for job in jobs.values():
        if job.status == JobStatus.succeeded.value and job.measurement_id:
            out[job.id][int(job.request["training"]["epochs"])] = job.measurement_id
    return out


def sweep_table(session: Session, points: Sequence[Mapping[str, Any]], jobs: Mapping[str, Job],
                n_train_axis: bool) -> tuple[list[SweepRow], list[SweepFit]]:
    """The table rows (ordered by process, network, n_train, epoch) and the log fits."""
    measured = _measured_epochs(session, jobs)
    ids = [mid for epochs in measured.values() for mid in epochs.values()]
    summaries = {m.id: MeasurementSummary.model_validate(m.summary) for m in session.scalars(
        select(Measurement).where(Measurement.id.in_(ids)))} if ids else {}
    groups: dict[tuple[int, str, str | None, int], list[tuple[str, MeasurementSummary]]] = \
        defaultdict(list)
    final_epoch: dict[tuple[int, str, str | None], int] = {}
    order = {"process": [], "network": []}  # type: dict[str, list[Any]]
    for p in points:
        key = (int(p["n_train"]), str(p["process"]), p["network"])
        final_epoch[key] = int(p["epochs"])
        for axis in ("process", "network"):
            if p[axis] not in order[axis]:
                order[axis].append(p[axis])
        for epoch, mid in measured.get(p["job_id"], {}).items():
            if mid in summaries:
                groups[(*key, epoch)].append((mid, summaries[mid]))
    rows = []
    for (n, process, network, epoch), found in groups.items():
        agg = aggregate_seeds([s.neural_entropy.nats for _, s in found],
                              [s.neural_entropy.stderr for _, s in found])
        totals = [s.total_entropy.nats for _, s in found if s.total_entropy is not None]
        dim = found[0][1].dim
        rows.append(SweepRow(
            n_train=n, process=process, network=network, epoch=epoch,
            final=epoch == final_epoch[(n, process, network)], n_seeds=agg.n_seeds,
            mean=agg.mean, spread=agg.spread, stderr=agg.stderr,
            total_entropy=sum(totals) / len(totals) if totals else None,
            bits_per_dim=agg.mean / math.log(2) / dim, measurement_ids=[mid for mid, _ in found]))
    rows.sort(key=lambda r: (order["process"].index(r.process), order["network"].index(r.network),
                             r.n_train, r.epoch))
    fits = _fits(rows, order) if n_train_axis else []
    return rows, fits


def _fits(rows: list[SweepRow], order: Mapping[str, list[Any]]) -> list[SweepFit]:
    fits = []
    for process in order["process"]:
        for network in order["network"]:
            final = [r for r in rows if r.final and r.process == process and r.network == network]
            variances = [SeedAggregate(r.n_seeds, r.mean, r.spread, r.stderr).variance_of_mean
                         for r in final]
            fit = log_fit([r.n_train for r in final], [r.mean for r in final], variances)
            fits.append(SweepFit(
                process=process, network=network, a=fit.a, b=fit.b, a_stderr=fit.a_stderr,
                b_stderr=fit.b_stderr, a_stderr_residual=fit.a_stderr_residual,
                b_stderr_residual=fit.b_stderr_residual, r_squared=fit.r_squared,
                n_points=fit.n_points, n_train=fit.n_train, residuals=fit.residuals,
                note=fit.note))
    return fits


def table_csv(rows: Sequence[SweepRow]) -> str:
    """CSV of the rows (empty cells for nulls), one header line."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for r in rows:
        values = [getattr(r, c) for c in TABLE_COLUMNS]
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                         for v in values])
    return buf.getvalue()
