"""Measurements: documents, curve rows (JSON / CSV) and the plot."""

from __future__ import annotations

import csv
import io

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import not_found
from app.schemas.measurements import (
    CURVE_COLUMNS,
    CurvePointPublic,
    CurvePublic,
    MeasurementPublic,
)
from app.services.pages import newest_first_page
from core.contract import MeasurementSummary, Reproducibility
from core.tables import CurvePoint, Job, Measurement, Owner

TOTAL_COLUMNS = ("total_rate", "total_rate_stderr", "total_cumulative")


def get_owned(session: Session, owner: Owner, measurement_id: str) -> Measurement:
    row = session.get(Measurement, measurement_id)
    if row is None or row.owner_id != owner.id:
        raise not_found("measurement", measurement_id)
    return row


def list_owned(session: Session, owner: Owner, limit: int, offset: int
               ) -> tuple[list[Measurement], int]:
    """A page of the owner's measurements, newest first."""
    return newest_first_page(session, Measurement, [Measurement.owner_id == owner.id], limit,
                             offset)


def points_of(session: Session, measurement: Measurement) -> list[CurvePoint]:
    return list(session.scalars(
        select(CurvePoint).where(CurvePoint.measurement_id == measurement.id)
        .order_by(CurvePoint.idx)).all())


def curve_columns(session: Session, measurement: Measurement) -> dict[str, list[float | None]]:
    """The curve as columns (`CURVE_COLUMNS` -> values in idx order), read without building ORM
    objects (a page draws thousands of points)."""
    cols = [getattr(CurvePoint, c) for c in CURVE_COLUMNS]
    rows = session.execute(select(*cols).where(CurvePoint.measurement_id == measurement.id)
                           .order_by(CurvePoint.idx)).all()
    return {c: [None if r[i] is None else float(r[i]) for r in rows]
            for i, c in enumerate(CURVE_COLUMNS)}


def _links(m: Measurement, job_type: str | None) -> dict[str, str]:
    links = {"self": f"/v1/measurements/{m.id}",
             "curve_json": f"/v1/measurements/{m.id}/curve?format=json",
             "curve_csv": f"/v1/measurements/{m.id}/curve?format=csv",
             "plot": f"/v1/measurements/{m.id}/plot.png"}
    if m.job_id:
        links["job"] = f"/v1/jobs/{m.job_id}"
    if m.job_id and job_type == "train":  # the job's S_NN trajectory and convergence verdict
        links["convergence_plot"] = f"/v1/jobs/{m.job_id}/convergence.png"
    if m.checkpoint_id:
        links["checkpoint"] = f"/v1/checkpoints/{m.checkpoint_id}"
    if m.dataset_id:
        links["dataset"] = f"/v1/datasets/{m.dataset_id}"
    return links


def measurement_public(session: Session, m: Measurement) -> MeasurementPublic:
    s = MeasurementSummary.model_validate(m.summary)
    job_type = session.scalar(select(Job.type).where(Job.id == m.job_id)) if m.job_id else None
    n_points = session.scalar(select(func.count()).select_from(CurvePoint)
                              .where(CurvePoint.measurement_id == m.id)) or 0
    return MeasurementPublic(
        id=m.id, job_id=m.job_id, dataset_id=m.dataset_id, checkpoint_id=m.checkpoint_id,
        epoch=m.epoch, created_at=m.created_at, neural_entropy=s.neural_entropy,
        total_entropy=s.total_entropy, density_bound=s.density_bound,
        data_entropy=s.data_entropy, t_min=s.t_min, t_max=s.t_max,
        n_evaluations=s.n_evaluations, dim=s.dim, n_points=int(n_points),
        summary=s, reproducibility=Reproducibility.model_validate(m.reproducibility),
        links=_links(m, job_type),
    )


def has_total(points: list[CurvePoint]) -> bool:
    return any(p.total_cumulative is not None or p.total_rate is not None for p in points)


def curve_public(m: Measurement, points: list[CurvePoint]) -> CurvePublic:
    total = has_total(points)
    columns = [c for c in CURVE_COLUMNS if total or c not in TOTAL_COLUMNS]
    return CurvePublic(
        measurement_id=m.id, columns=columns, has_total=total,
        points=[CurvePointPublic.model_validate({c: getattr(p, c) for c in CURVE_COLUMNS})
                for p in points],
    )


def curve_csv(points: list[CurvePoint]) -> str:
    """CSV with a header row; the S_tot columns only when known; empty cells for nulls."""
    total = has_total(points)
    columns = [c for c in CURVE_COLUMNS if total or c not in TOTAL_COLUMNS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for p in points:
        writer.writerow(["" if getattr(p, c) is None else repr(float(getattr(p, c)))
                         for c in columns])
    return buf.getvalue()
