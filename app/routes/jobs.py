"""/v1/jobs: submit train / measure / sample jobs, list, get, cancel, fetch samples."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import StreamingResponse
from redis import Redis

from app.deps import ArtifactStoreDep, CurrentOwner, SessionDep, SettingsDep
from app.errors import problem_responses
from app.plots import convergence_plot_png
from app.schemas.common import Limit, Offset, Page, page_of
from app.schemas.jobs import JobCreate, JobPublic
from app.services import jobs as service
from app.services.blobs import blob_response
from app.services.http_cache import NOT_MODIFIED_DOC, cache_headers, etag_for, not_modified
from app.services.idempotency import REPLAY_HEADER, IdempotencyKeyHeader, check_key
from core import queue as rq_client

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

StatusFilter = Literal["queued", "running", "succeeded", "failed", "canceled"]
TypeFilter = Literal["train", "measure", "sample"]

_EXAMPLES = {
    "train (all defaults)": {"value": {"type": "train", "dataset_id": "ds_..."}},
    "train (10 epochs, milestones)": {"value": {
        "type": "train", "dataset_id": "ds_...", "process": {"kind": "vp", "kappa": 1.0},
        "training": {"epochs": 10, "milestones": [5]}, "measurement": {"n_times": 64}}},
    "measure": {"value": {"type": "measure", "checkpoint_id": "ckpt_...",
                          "dataset_id": "ds_..."}},
    "sample": {"value": {"type": "sample", "checkpoint_id": "ckpt_...", "n": 64, "seed": 0}},
}


def _redis(request: Request) -> Redis:
    return rq_client.redis_connection(request.app.state.settings.resolved_redis_url)


@router.post(
    "", status_code=202, response_model=JobPublic,
    summary="Submit a job; 202 + Location: /v1/jobs/{id}",
    description=(
        "Every field has a documented default, so `{\"type\": \"train\", \"dataset_id\": ...}` "
        "works: the paper's MLP for vectors or a small U-Net for images, VP(0.1, 16, 1), the "
        "training and measurement defaults below. The fully resolved request is stored and "
        "returned as `request`. Inconsistent settings get 422 naming the field; values over a "
        "configured cap get 422 naming the cap. Send `Idempotency-Key` to make a retry safe: "
        "it returns the first job (202, same id) and creates nothing. More than "
        "MAX_QUEUED_JOBS_PER_OWNER queued submissions: 429 + Retry-After."),
    responses=problem_responses(401, 404, 422, 429, 503),
)
def submit_job(request: Request, response: Response, session: SessionDep, owner: CurrentOwner,
               settings: SettingsDep,
               body: Annotated[JobCreate, Body(openapi_examples=_EXAMPLES)],
               idempotency_key: IdempotencyKeyHeader = None) -> JobPublic:
    doc, replayed = service.submit(session, owner, body, settings, _redis(request),
                                   check_key(idempotency_key))
    response.headers["Location"] = f"/v1/jobs/{doc.id}"
    if replayed:
        response.headers[REPLAY_HEADER] = "true"
    return doc


@router.get("", response_model=Page[JobPublic], summary="List your jobs (newest first)",
            responses=problem_responses(401, 422))
def list_jobs(session: SessionDep, owner: CurrentOwner,
              status: Annotated[StatusFilter | None, Query(description="Only this status.")] = None,
              type: Annotated[TypeFilter | None, Query(description="Only this type.")] = None,
              limit: Limit = 50, offset: Offset = 0) -> Page[JobPublic]:
    rows, total = service.list_owned(session, owner, status, type, limit, offset)
    return page_of(service.jobs_public(session, rows), total, limit, offset)


@router.get("/{job_id}", response_model=JobPublic, summary="Get a job (status, progress, results)",
            responses=problem_responses(401, 404))
def get_job(job_id: str, session: SessionDep, owner: CurrentOwner) -> JobPublic:
    return service.job_public(session, service.get_owned(session, owner, job_id))


@router.post(
    "/{job_id}/cancel", response_model=JobPublic,
    summary="Cancel a job: a queued job is canceled at once, a running one between steps",
    responses=problem_responses(401, 404, 409),
)
def cancel_job(job_id: str, request: Request, session: SessionDep,
               owner: CurrentOwner) -> JobPublic:
    try:
        connection: Redis | None = _redis(request)
    except Exception:  # noqa: BLE001 - cancel works from the DB alone
        connection = None
    return service.job_public(session, service.cancel(session, owner, job_id, connection))


@router.get("/{job_id}/samples.npy", response_class=StreamingResponse,
            summary="Samples of a succeeded sample job as .npy (n, ...)",
            responses={200: {"content": {"application/octet-stream": {}}}, **NOT_MODIFIED_DOC,
                       **problem_responses(401, 404, 409)})
def samples_npy(job_id: str, request: Request, session: SessionDep, owner: CurrentOwner,
                store: ArtifactStoreDep) -> Response:
    sha = service.samples_artifact(session, owner, job_id, "npy")
    etag = etag_for(sha)
    return not_modified(request, etag) or blob_response(
        session, store, sha, media_type="application/octet-stream",
        filename=f"{job_id}-samples.npy", what="samples file", headers=cache_headers(etag))


@router.get("/{job_id}/convergence.png", response_class=Response,
            summary="A train job's S_NN over the epochs, its trend and verdict, as a PNG",
            responses={200: {"content": {"image/png": {}}}, **problem_responses(401, 404, 409)})
def convergence_png(job_id: str, session: SessionDep, owner: CurrentOwner) -> Response:
    """A sync route: the database read and the drawing run on a worker thread."""
    convergence = service.convergence_of(session, owner, job_id)
    session.commit()  # no connection held while drawing
    return Response(convergence_plot_png(convergence, job_id), media_type="image/png")


@router.get("/{job_id}/samples.png", response_class=StreamingResponse,
            summary="Image samples of a succeeded sample job as a PNG grid",
            responses={200: {"content": {"image/png": {}}}, **NOT_MODIFIED_DOC,
                       **problem_responses(401, 404, 409)})
def samples_png(job_id: str, request: Request, session: SessionDep, owner: CurrentOwner,
                store: ArtifactStoreDep) -> Response:
    sha = service.samples_artifact(session, owner, job_id, "png")
    etag = etag_for(sha)
    return not_modified(request, etag) or blob_response(
        session, store, sha, media_type="image/png", what="samples image",
        headers=cache_headers(etag))
