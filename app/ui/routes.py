"""/ui/: the read-only results dashboard (server-rendered pages; see app/ui/__init__.py).

Routes stay thin: they authorise the browser session (app.ui.auth), call the same services as the
/v1 API (so each owner sees exactly what the API shows them) and render a template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from redis import Redis

from app.deps import ArtifactStoreDep, SessionDep
from app.errors import ProblemError
from app.plots import curve_png
from app.services import checkpoints as checkpoints_service
from app.services import compare as compare_service
from app.services import datasets as datasets_service
from app.services import jobs as jobs_service
from app.services import measurements as measurements_service
from app.services import sweeps as sweeps_service
from app.services.blobs import blob_response
from app.ui import views
from app.ui.auth import (
    MAX_KEY_CHARS,
    OptionalSession,
    UiApiSession,
    UiSession,
    UiSessionDep,
    check_csrf,
    clear_session_cookies,
    same_origin,
    set_session_cookies,
)
from core import queue as rq_client
from core.contract import MeasurementSummary
from core.keys import owner_for_key
from models.sampling import image_grid_png

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TYPES = ("train", "measure", "sample")
PAGE = 50
# Pages load only what the app serves: no inline script, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page(request: Request, name: str, ui: UiSession | None, status_code: int = 200,
         **context: Any) -> Response:
    """Render a template with the session's CSRF token, under the security headers."""
    response = templates.TemplateResponse(
        request, name, {"ui": ui, "csrf_token": ui.csrf_token if ui else "", **context},
        status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _redis(request: Request) -> Redis | None:
    try:
        return rq_client.redis_connection(request.app.state.settings.resolved_redis_url)
    except Exception:  # noqa: BLE001 - cancel works from the database alone
        return None


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


# ---- sign-in ----
@router.get("/")
def home(request: Request, ui: OptionalSession) -> Response:
    """The sign-in page, or the job list once signed in."""
    if ui is not None:
        return RedirectResponse("/ui/jobs", status_code=303)
    return page(request, "signin.html", None)


@router.post("/sign-in")
def sign_in(request: Request, session: SessionDep,
            api_key: Annotated[str, Form(max_length=MAX_KEY_CHARS)] = "") -> Response:
    if not same_origin(request):
        raise ProblemError(403, "Forbidden", "cross-origin sign-in refused")
    key = api_key.strip()
    if not key or owner_for_key(session, key) is None:
        return page(request, "signin.html", None, 401,
                    error="That API key is not valid (or has been revoked).")
    response = RedirectResponse("/ui/jobs", status_code=303)
    set_session_cookies(request, response, key)
    return response


@router.post("/sign-out")
def sign_out(request: Request, ui: UiSessionDep,
             csrf_token: Annotated[str | None, Form()] = None) -> Response:
    check_csrf(request, ui, csrf_token)
    response = RedirectResponse("/ui/", status_code=303)
    clear_session_cookies(request, response)
    return response


# ---- jobs ----
def _job_rows(session: SessionDep, ui: UiSession, status: str | None, job_type: str | None,
              offset: int) -> tuple[list[dict[str, Any]], int]:
    rows, total = jobs_service.list_owned(session, ui.owner, status, job_type, PAGE, offset)
    return [views.job_row(doc) for doc in jobs_service.jobs_public(session, rows)], total


@router.get("/jobs")
def jobs_page(request: Request, session: SessionDep, ui: UiSessionDep,
              status: str | None = None, type: str | None = None,
              offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    status, job_type = _choice(status, STATUSES), _choice(type, TYPES)
    rows, total = _job_rows(session, ui, status, job_type, offset)
    return page(request, "jobs.html", ui, rows=rows, total=total, offset=offset, page_size=PAGE,
                status=status or "", job_type=job_type or "", statuses=STATUSES, types=TYPES)


@router.get("/api/jobs")
def jobs_json(session: SessionDep, ui: UiApiSession, status: str | None = None,
              type: str | None = None, offset: Annotated[int, Query(ge=0)] = 0) -> JSONResponse:
    """What the job list polls: its rows as JSON (the same rows the page renders)."""
    rows, total = _job_rows(session, ui, _choice(status, STATUSES), _choice(type, TYPES), offset)
    return JSONResponse({"jobs": rows, "total": total}, headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, session: SessionDep, ui: UiSessionDep,
               csrf_token: Annotated[str | None, Form()] = None) -> Response:
    """Cancel from the page: JSON for the script (token in X-CSRF-Token), else back to the list."""
    check_csrf(request, ui, csrf_token)
    job = jobs_service.cancel(session, ui.owner, job_id, _redis(request))
    row = views.job_row(jobs_service.job_public(session, job))
    if csrf_token is None:
        return JSONResponse(row)
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: SessionDep, ui: UiSessionDep) -> Response:
    stored = jobs_service.get_owned(session, ui.owner, job_id)
    job = jobs_service.job_public(session, stored)
    chart = None if job.convergence is None else views.convergence_chart(job.convergence)
    milestones = []
    for m in job.milestones:
        summary = None
        if m.measurement_id:
            measured = measurements_service.get_owned(session, ui.owner, m.measurement_id)
            summary = MeasurementSummary.model_validate(measured.summary)
        milestones.append({"epoch": m.epoch, "measurement_id": m.measurement_id,
                           "checkpoint_id": m.checkpoint_id, "summary": summary})
    return page(request, "job.html", ui, job=job, row=views.job_row(job), conv_chart=chart,
                milestones=milestones, conv=job.convergence,
                has_grid=job.status == "succeeded" and bool(stored.samples_png_sha256),
                request_json=json.dumps(job.request.model_dump(mode="json"), indent=2))


@router.get("/jobs/{job_id}/samples.png")
def job_samples_png(job_id: str, session: SessionDep, ui: UiSessionDep,
                    store: ArtifactStoreDep) -> Response:
    sha = jobs_service.samples_artifact(session, ui.owner, job_id, "png")
    return blob_response(session, store, sha, media_type="image/png", what="samples image")


# ---- measurements ----
@router.get("/measurements")
def measurements_page(request: Request, session: SessionDep, ui: UiSessionDep,
                      offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    rows, total = measurements_service.list_owned(session, ui.owner, PAGE, offset)
    items = [(m, MeasurementSummary.model_validate(m.summary)) for m in rows]
    return page(request, "measurements.html", ui, items=items, total=total, offset=offset,
                page_size=PAGE)


@router.get("/measurements/{measurement_id}")
def measurement_page(measurement_id: str, request: Request, session: SessionDep,
                     ui: UiSessionDep) -> Response:
    m = measurements_service.get_owned(session, ui.owner, measurement_id)
    doc = measurements_service.measurement_public(session, m)
    curve = measurements_service.curve_columns(session, m)
    return page(request, "measurement.html", ui, m=doc, charts=views.measurement_charts(curve),
                reproducibility=doc.reproducibility.model_dump(mode="json"))


@router.get("/measurements/{measurement_id}/curve.csv")
def measurement_csv(measurement_id: str, session: SessionDep, ui: UiSessionDep) -> Response:
    m = measurements_service.get_owned(session, ui.owner, measurement_id)
    return Response(measurements_service.curve_csv(measurements_service.points_of(session, m)),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'inline; filename="{m.id}-curve.csv"'})


@router.get("/measurements/{measurement_id}/measurement.json")
def measurement_json(measurement_id: str, session: SessionDep, ui: UiSessionDep) -> Response:
    """The measurement document and its curve, as the API serves them."""
    m = measurements_service.get_owned(session, ui.owner, measurement_id)
    doc = measurements_service.measurement_public(session, m)
    curve = measurements_service.curve_public(m, measurements_service.points_of(session, m))
    body = {"measurement": doc.model_dump(mode="json"), "curve": curve.model_dump(mode="json")}
    return JSONResponse(body, headers={
        "Content-Disposition": f'inline; filename="{m.id}.json"'})


@router.get("/measurements/{measurement_id}/plot.png")
async def measurement_png(measurement_id: str, session: SessionDep,
                          ui: UiSessionDep) -> Response:
    m = measurements_service.get_owned(session, ui.owner, measurement_id)
    points = measurements_service.points_of(session, m)
    summary = MeasurementSummary.model_validate(m.summary)
    return Response(await run_in_threadpool(curve_png, points, summary, m.id),
                    media_type="image/png")


@router.get("/compare")
def compare_page(request: Request, session: SessionDep, ui: UiSessionDep,
                 ids: Annotated[list[str] | None, Query()] = None) -> Response:
    """Selected measurements on one time axis (`?ids=a&ids=b` or `?ids=a,b`)."""
    raw = ",".join(ids or [])
    doc, _ = compare_service.compare(session, ui.owner, compare_service.parse_ids(raw))
    return page(request, "compare.html", ui, doc=doc, charts=views.compare_charts(doc))


# ---- sweeps ----
@router.get("/sweeps")
def sweeps_page(request: Request, session: SessionDep, ui: UiSessionDep,
                offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    rows, total = sweeps_service.list_owned(session, ui.owner, PAGE, offset)
    counts = sweeps_service.counts_of(session, [s.id for s in rows])
    items = [sweeps_service.sweep_summary(s, counts[s.id]) for s in rows]
    return page(request, "sweeps.html", ui, items=items, total=total, offset=offset,
                page_size=PAGE)


@router.get("/sweeps/{sweep_id}")
def sweep_page(sweep_id: str, request: Request, session: SessionDep, ui: UiSessionDep) -> Response:
    doc = sweeps_service.sweep_public(session, sweeps_service.get_owned(session, ui.owner,
                                                                        sweep_id))
    return page(request, "sweep.html", ui, sweep=doc,
                sweep_chart=views.sweep_chart(doc.table, doc.fits))


# ---- data sets and checkpoints ----
@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep, ui: UiSessionDep,
                  offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    rows, total = datasets_service.list_owned(session, ui.owner, PAGE, offset)
    return page(request, "datasets.html", ui, items=[datasets_service.dataset_public(r) for r in rows],
                total=total, offset=offset, page_size=PAGE)


PREVIEW_IMAGES = 64


@router.get("/datasets/{dataset_id}/preview.png")
async def dataset_preview(dataset_id: str, session: SessionDep, ui: UiSessionDep,
                          store: ArtifactStoreDep) -> Response:
    """The first 64 images of an image data set as a grid (404 for vector data)."""
    row = datasets_service.get_owned(session, ui.owner, dataset_id)
    if not row.is_image:
        raise ProblemError(404, "Not Found", f"dataset {dataset_id} holds no images")
    lo, hi = (row.value_range or [-1.0, 1.0])[:2]

    def draw() -> bytes:
        x, _ = datasets_service.load_dataset_arrays(store, row.sha256)
        return image_grid_png(x[:PREVIEW_IMAGES], (float(lo), float(hi)))

    return Response(await run_in_threadpool(draw), media_type="image/png")


@router.get("/checkpoints")
def checkpoints_page(request: Request, session: SessionDep, ui: UiSessionDep,
                     offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    rows, total = checkpoints_service.list_owned(session, ui.owner, PAGE, offset)
    items = [checkpoints_service.checkpoint_public(r) for r in rows]
    grids = jobs_service.sample_grids(session, ui.owner,
                                      [c.id for c in items if len(c.event_shape) == 3])
    return page(request, "checkpoints.html", ui, items=items, grids=grids, total=total,
                offset=offset, page_size=PAGE)
