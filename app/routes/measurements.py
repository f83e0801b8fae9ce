"""/v1/measurements: summary with reproducibility, the curve (JSON / CSV) and its plot.

A measurement never changes once stored, so every representation carries an `ETag` and
`Cache-Control: private, max-age=31536000, immutable`, and `If-None-Match` gets a 304.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from app.deps import CurrentOwner, SessionDep
from app.errors import problem_responses
from app.plots import curve_png
from app.schemas.measurements import CurvePublic, MeasurementPublic
from app.services import measurements as service
from app.services.http_cache import (
    NOT_MODIFIED_DOC,
    BytesCache,
    cache_headers,
    etag_for,
    not_modified,
)
from core.contract import MeasurementSummary

router = APIRouter(prefix="/v1/measurements", tags=["measurements"])

_PLOTS = BytesCache()


@router.get("/{measurement_id}", response_model=MeasurementPublic,
            summary="A measurement: S_NN, S_tot when known, bound, settings to reproduce it",
            responses={**NOT_MODIFIED_DOC, **problem_responses(401, 404)})
def get_measurement(measurement_id: str, request: Request, session: SessionDep,
                    owner: CurrentOwner) -> MeasurementPublic | Response:
    m = service.get_owned(session, owner, measurement_id)
    etag = etag_for(m.id, "doc")
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    doc = service.measurement_public(session, m)
    return JSONResponse(doc.model_dump(mode="json"), headers=cache_headers(etag))


@router.get(
    "/{measurement_id}/curve", response_model=CurvePublic,
    summary="The curve rows: s, rate, rate_stderr, cumulative (+ S_tot columns when known)",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
               **NOT_MODIFIED_DOC, **problem_responses(401, 404, 422)},
)
def get_curve(measurement_id: str, request: Request, session: SessionDep, owner: CurrentOwner,
              format: Annotated[Literal["json", "csv"],
                                Query(description="json (default) or csv")] = "json",
              ) -> CurvePublic | Response:
    m = service.get_owned(session, owner, measurement_id)
    etag = etag_for(m.id, "curve", format)
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    points = service.points_of(session, m)
    if format == "csv":
        return Response(service.curve_csv(points), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'inline; filename="{measurement_id}-curve.csv"',
                                 **cache_headers(etag)})
    return JSONResponse(service.curve_public(m, points).model_dump(mode="json"),
                        headers=cache_headers(etag))


@router.get("/{measurement_id}/plot.png", response_class=Response,
            summary="Rate and cumulative curves, S_NN and S_tot overlaid (PNG)",
            responses={200: {"content": {"image/png": {}}}, **NOT_MODIFIED_DOC,
                       **problem_responses(401, 404)})
def get_plot(measurement_id: str, request: Request, session: SessionDep,
             owner: CurrentOwner) -> Response:
    """Drawn once per process and then served from memory (a sync route: the database reads
    and the drawing run on a worker thread, never on the event loop)."""
    m = service.get_owned(session, owner, measurement_id)
    etag = etag_for(m.id, "plot")
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    png = _PLOTS.get(m.id)
    if png is None:
        points = service.points_of(session, m)
        session.commit()  # no connection held while drawing
        png = curve_png(points, MeasurementSummary.model_validate(m.summary), m.id)
        _PLOTS.put(m.id, png)
    return Response(png, media_type="image/png", headers=cache_headers(etag))
