"""/v1/measurements: summary with reproducibility, the curve (JSON / CSV) and its plot."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from app.deps import CurrentOwner, SessionDep
from app.errors import problem_responses
from app.plots import curve_png
from app.schemas.measurements import CurvePublic, MeasurementPublic
from app.services import measurements as service
from core.contract import MeasurementSummary

router = APIRouter(prefix="/v1/measurements", tags=["measurements"])


@router.get("/{measurement_id}", response_model=MeasurementPublic,
            summary="A measurement: S_NN, S_tot when known, bound, settings to reproduce it",
            responses=problem_responses(401, 404))
def get_measurement(measurement_id: str, session: SessionDep,
                    owner: CurrentOwner) -> MeasurementPublic:
    return service.measurement_public(session, service.get_owned(session, owner, measurement_id))


@router.get(
    "/{measurement_id}/curve", response_model=CurvePublic,
    summary="The curve rows: s, rate, rate_stderr, cumulative (+ S_tot columns when known)",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
               **problem_responses(401, 404, 422)},
)
def get_curve(measurement_id: str, session: SessionDep, owner: CurrentOwner,
              format: Annotated[Literal["json", "csv"],
                                Query(description="json (default) or csv")] = "json",
              ) -> CurvePublic | Response:
    m = service.get_owned(session, owner, measurement_id)
    points = service.points_of(session, m)
    if format == "csv":
        return Response(service.curve_csv(points), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'inline; filename="{measurement_id}-curve.csv"'})
    return service.curve_public(m, points)


@router.get("/{measurement_id}/plot.png", response_class=Response,
            summary="Rate and cumulative curves, S_NN and S_tot overlaid (PNG)",
            responses={200: {"content": {"image/png": {}}}, **problem_responses(401, 404)})
async def get_plot(measurement_id: str, session: SessionDep, owner: CurrentOwner) -> Response:
    m = service.get_owned(session, owner, measurement_id)
    points = service.points_of(session, m)
    summary = MeasurementSummary.model_validate(m.summary)
    png = await run_in_threadpool(curve_png, points, summary, m.id)
    return Response(png, media_type="image/png")
