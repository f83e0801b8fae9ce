"""Comparing measurements: their curves on one time axis, each labelled by data set, N, process
and epoch. Measurements whose processes differ in time axis (kind or measured range) are refused
with 422."""

from __future__ import annotations

import csv
import io
import math

from sqlalchemy.orm import Session

from app.errors import not_found, unprocessable
from app.schemas.compare import COMPARE_CSV_COLUMNS, ComparePublic, CompareSeries, TimeAxis
from app.schemas.measurements import CURVE_COLUMNS, CurvePointPublic
from app.services.job_requests import training_points
from app.services.labels import process_label
from app.services.measurements import points_of
from core.contract import MeasurementSummary
from core.tables import Checkpoint, CurvePoint, Dataset, Job, Measurement, Owner

MAX_COMPARED = 20
FIELD = "measurement_ids"


def parse_ids(raw: str) -> list[str]:
    """Comma-separated ids, in order, without repeats; 1..MAX_COMPARED of them."""
    ids = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not ids:
        raise unprocessable("give one or more measurement ids, comma-separated", FIELD)
    if len(ids) > MAX_COMPARED:
        raise unprocessable(f"at most {MAX_COMPARED} measurements can be compared, got "
                            f"{len(ids)}", FIELD)
    return ids


def _train_job(session: Session, m: Measurement) -> Job | None:
    """The train job that produced the measured weights (through a measure job's checkpoint)."""
    job = session.get(Job, m.job_id) if m.job_id else None
    if job is not None and job.type == "measure" and job.input_checkpoint_id:
        ckpt = session.get(Checkpoint, job.input_checkpoint_id)
        job = session.get(Job, ckpt.job_id) if ckpt is not None and ckpt.job_id else None
    return job if job is not None and job.type == "train" else None


def _n_train(session: Session, m: Measurement) -> int | None:
    job = _train_job(session, m)
    if job is None:
        return None
    if job.request.get("n_train") is not None:
        return int(job.request["n_train"])
    dataset = session.get(Dataset, job.request.get("dataset_id"))
    return training_points(dataset) if dataset is not None else None


def _series(session: Session, m: Measurement, points: list[CurvePoint]) -> CompareSeries:
    summary = MeasurementSummary.model_validate(m.summary)
    spec = dict(m.reproducibility.get("process") or {})
    dataset = session.get(Dataset, m.dataset_id) if m.dataset_id else None
    name = None if dataset is None else (dataset.name or dataset.kind)
    n_train = _n_train(session, m)
    process = process_label(spec)
    parts = [name or m.dataset_id, None if n_train is None else f"N={n_train}", process,
             None if m.epoch is None else f"epoch {m.epoch}"]
    return CompareSeries(
        measurement_id=m.id, label=", ".join(p for p in parts if p), dataset_id=m.dataset_id,
        dataset=name, n_train=n_train, process=process, process_spec=spec, epoch=m.epoch,
        neural_entropy=summary.neural_entropy.nats, stderr=summary.neural_entropy.stderr,
        total_entropy=None if summary.total_entropy is None else summary.total_entropy.nats,
        points=[CurvePointPublic.model_validate({c: getattr(p, c) for c in CURVE_COLUMNS})
                for p in points])


def compare(session: Session, owner: Owner, ids: list[str]
            ) -> tuple[ComparePublic, list[list[CurvePoint]]]:
    """The comparison document and each measurement's curve rows (for the plot)."""
    rows = []
    for mid in ids:
        m = session.get(Measurement, mid)
        if m is None or m.owner_id != owner.id:
            raise not_found("measurement", mid, FIELD)
        rows.append(m)
    axes = []
    for m in rows:
        summary = MeasurementSummary.model_validate(m.summary)
        kind = str((m.reproducibility.get("process") or {}).get("kind", "?"))
        axes.append((kind, summary.t_min, summary.t_max))
    kind0, lo0, hi0 = axes[0]
    if any(kind != kind0 or not _same(lo, lo0) or not _same(hi, hi0) for kind, lo, hi in axes):
        listing = "; ".join(f"{m.id}: {kind} on [{lo:g}, {hi:g}]" if lo is not None and
                            hi is not None else f"{m.id}: {kind}"
                            for m, (kind, lo, hi) in zip(rows, axes, strict=True))
        raise unprocessable("these measurements do not share a process time axis (kind and "
                            f"range): {listing}", FIELD)
    points = [points_of(session, m) for m in rows]
    doc = ComparePublic(
        time_axis=TimeAxis(kind=kind0, t_min=lo0, t_max=hi0),
        series=[_series(session, m, p) for m, p in zip(rows, points, strict=True)])
    return doc, points


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def compare_csv(doc: ComparePublic) -> str:
    """Long format: one line per (measurement, s), empty cells for nulls."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COMPARE_CSV_COLUMNS)
    for series in doc.series:
        for p in series.points:
            values = [p.s, p.rate, p.rate_stderr, p.cumulative, p.cumulative_stderr]
            writer.writerow([series.measurement_id, series.label,
                             *("" if v is None else repr(float(v)) for v in values)])
    return buf.getvalue()
