"""/v1/datasets: upload (multipart) or describe (JSON) a data set; list, get, download, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from app.deps import ArtifactStoreDep, CurrentOwner, SessionDep, SettingsDep
from app.errors import ProblemError, problem_responses
from app.schemas.common import Limit, Offset, Page, page_of
from app.schemas.datasets import (
    DatasetCreate,
    DatasetPublic,
    DigitsCreate,
    GaussianMixtureCreate,
    UploadForm,
)
from app.services import datasets as service
from app.services import idempotency
from app.services.blobs import blob_response
from app.services.idempotency import REPLAY_HEADER, IdempotencyKeyHeader, check_key
from app.services.uploads import check_content_length, receive_multipart, too_large
from core.tables import Dataset

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_CREATE_ADAPTER: TypeAdapter[Any] = TypeAdapter(DatasetCreate)
MAX_JSON_BYTES = 1024 * 1024  # mixture parameters, not data


def _upload_form_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        "file": {"type": "string", "format": "binary",
                 "description": ".npy (array x) or .npz (arrays x and optional integer labels)"},
    }
    for name, prop in UploadForm.model_json_schema()["properties"].items():
        props[name] = {k: v for k, v in prop.items() if k != "title"}
    return {"type": "object", "required": ["file"], "properties": props}


CREATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "Either a multipart upload (field `file`: a .npy, or a .npz with `x` and optional "
            "integer `labels`; never unpickled; each .npz member's declared size is checked "
            "before it is decompressed; the body is capped at MAX_UPLOAD_BYTES while it streams "
            "in -> 413), or JSON describing a Gaussian mixture or the built-in digits."),
        "content": {
            "multipart/form-data": {"schema": _upload_form_schema()},
            "application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/GaussianMixtureCreate"},
                {"$ref": "#/components/schemas/DigitsCreate"},
            ], "discriminator": {"propertyName": "kind"}}},
        },
    }
}
EXTRA_SCHEMAS = (GaussianMixtureCreate, DigitsCreate)


async def _read_json(request: Request, limit: int) -> bytes:
    check_content_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


@router.post(
    "", status_code=201, response_model=DatasetPublic, openapi_extra=CREATE_OPENAPI,
    summary="Create a data set (upload, Gaussian mixture or built-in digits)",
    responses=problem_responses(401, 413, 415, 422),
)
async def create_dataset(request: Request, response: Response, session: SessionDep,
                         owner: CurrentOwner, settings: SettingsDep,
                         store: ArtifactStoreDep,
                         idempotency_key: IdempotencyKeyHeader = None) -> DatasetPublic:
    """`Idempotency-Key`: a retry returns the first data set (201, same id); the same key with
    another body is a 422."""
    key = check_key(idempotency_key)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fp: str | None = None
    if content_type == "multipart/form-data":
        with store.staging_file(".upload") as staging:
            upload = await receive_multipart(request, settings.max_upload_bytes, staging)
            fp = idempotency.upload_fingerprint(upload.fields, upload.sha256)
            prior = await run_in_threadpool(idempotency.prior_resource, session, owner, key,
                                            ENDPOINT, fp, Dataset)
            if prior is not None:
                return await run_in_threadpool(_replay, session, prior, response)
            row = await run_in_threadpool(service.create_from_upload, session, store, settings,
                                          owner, upload)
    elif content_type == "application/json":
        raw = await _read_json(request, min(MAX_JSON_BYTES, settings.max_upload_bytes))
        try:
            spec = _CREATE_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        fp = idempotency.fingerprint(spec)
        prior = await run_in_threadpool(idempotency.prior_resource, session, owner, key,
                                        ENDPOINT, fp, Dataset)
        if prior is not None:
            return await run_in_threadpool(_replay, session, prior, response)
        if isinstance(spec, GaussianMixtureCreate):
            row = await run_in_threadpool(service.create_mixture, session, store, settings, owner,
                                          spec)
        else:
            row = await run_in_threadpool(service.create_digits, session, store, settings, owner,
                                          spec)
    else:
        raise ProblemError(415, "Unsupported Media Type",
                           "send multipart/form-data (field 'file') or application/json",
                           "content-type")
    doc = await run_in_threadpool(service.public, session, row)  # before the commit
    dataset_id, replayed = await run_in_threadpool(
        idempotency.commit_or_replay, session, owner, key, ENDPOINT, fp, row.id, 201)
    if replayed:
        winner = await run_in_threadpool(service.get_owned, session, owner, dataset_id)
        return await run_in_threadpool(_replay, session, winner, response)
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return doc


ENDPOINT = "POST /v1/datasets"


def _replay(session: Session, row: Dataset, response: Response) -> DatasetPublic:
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    response.headers[REPLAY_HEADER] = "true"
    return service.public(session, row)


@router.get("", response_model=Page[DatasetPublic], summary="List your data sets (newest first)",
            responses=problem_responses(401))
def list_datasets(session: SessionDep, owner: CurrentOwner, limit: Limit = 50,
                  offset: Offset = 0) -> Page[DatasetPublic]:
    """Entries carry `mixture` without its weights, means and stds (see the data set itself)."""
    rows, total = service.list_owned(session, owner, limit, offset)
    sizes = service.sizes_of(session, rows)
    return page_of([service.list_item(session, r, sizes) for r in rows], total, limit, offset)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="Get a data set",
            responses=problem_responses(401, 404))
def get_dataset(dataset_id: str, session: SessionDep, owner: CurrentOwner) -> DatasetPublic:
    return service.public(session, service.get_owned(session, owner, dataset_id))


@router.delete("/{dataset_id}", status_code=204, response_class=Response,
               summary="Delete a data set (409 while a queued or running job uses it)",
               responses=problem_responses(401, 404, 409))
def delete_dataset(dataset_id: str, session: SessionDep, owner: CurrentOwner,
                   store: ArtifactStoreDep) -> Response:
    service.delete_owned(session, store, owner, dataset_id)
    return Response(status_code=204)


@router.get(
    "/{dataset_id}/download", response_class=StreamingResponse,
    summary="Download the stored canonical .npz (x float32, scaled; optional int64 labels)",
    responses={200: {"content": {service.NPZ_MEDIA_TYPE: {}}},
               307: {"description": "Redirect to a presigned S3 URL (ARTIFACT_PRESIGNED_DOWNLOADS)."},
               **problem_responses(401, 404)},
)
def download_dataset(dataset_id: str, session: SessionDep, owner: CurrentOwner,
                     store: ArtifactStoreDep) -> Response:
    row = service.get_owned(session, owner, dataset_id)
    return blob_response(session, store, row.sha256, media_type=service.NPZ_MEDIA_TYPE,
                         filename=f"{row.id}.npz", what=f"file of dataset {row.id}")
