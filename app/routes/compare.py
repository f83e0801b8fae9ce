"""/v1/compare: several measurements' curves on one time axis (JSON, CSV or PNG)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.deps import CurrentOwner, SessionDep
from app.errors import problem_responses
from app.plots import compare_png
from app.schemas.compare import ComparePublic
from app.services import compare as service

router = APIRouter(prefix="/v1/compare", tags=["measurements"])


@router.get(
    "", response_model=ComparePublic,
    summary="Rate and cumulative curves of several measurements on one time axis",
    description=(
        "Each curve is labelled with its data set, N, process and epoch. Measurements whose "
        "processes differ in time axis (kind or measured range) get 422. `format=csv` gives "
        "one line per (measurement, s); `format=png` a two-panel plot with ±2 stderr bands."),
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                 "image/png": {}}},
               **problem_responses(401, 404, 422)},
)
def compare(
    session: SessionDep, owner: CurrentOwner,
    measurement_ids: Annotated[str, Query(description="Comma-separated measurement ids.")],
    format: Annotated[Literal["json", "csv", "png"],
                      Query(description="json (default), csv or png")] = "json",
) -> ComparePublic | Response:
    doc, points = service.compare(session, owner, service.parse_ids(measurement_ids))
    if format == "csv":
        return Response(service.compare_csv(doc), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'inline; filename="compare.csv"'})
    if format == "png":
        series = [(s.label, p) for s, p in zip(doc.series, points, strict=True)]
        return Response(compare_png(series, f"time axis: {doc.time_axis.kind}"),
                        media_type="image/png")
    return doc
