"""/v1/checkpoints: upload a safetensors checkpoint (config in its metadata), list, get, download,
delete. Checkpoints made by train jobs are listed and downloadable here too."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import ArtifactStoreDep, CurrentOwner, SessionDep, SettingsDep
from app.errors import ProblemError, problem_responses
from app.schemas.checkpoints import (
    CHECKPOINT_MEDIA_TYPE,
    CONFIG_FIELD_DESCRIPTION,
    CheckpointPublic,
)
from app.schemas.common import Limit, Offset, Page, page_of
from app.services import checkpoints as service
from app.services import idempotency
from app.services.blobs import blob_response
from app.services.http_cache import NOT_MODIFIED_DOC, cache_headers, etag_for, not_modified
from app.services.idempotency import REPLAY_HEADER, IdempotencyKeyHeader, check_key
from app.services.uploads import receive_multipart
from core.tables import Checkpoint

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])

CREATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "Multipart upload. `file`: one .safetensors file whose `__metadata__` key "
            "`neural_entropy` holds the config as JSON (docs/checkpoints.md); never unpickled — "
            "pickles and zips (torch.save, TorchScript) get 415. The header is checked (lengths, "
            "offsets, dtypes, shapes) and the tensors are compared with the architecture: a "
            "mismatch gets 422 listing the first offending tensors in `offending_tensors`. The "
            "body is capped at MAX_UPLOAD_BYTES while it streams in (413). Or: a diffusers pipeline "
            "folder (save_pretrained: unet/ + scheduler/) as one .zip or .tar(.gz), recognised by its "
            "content, stored with source 'diffusers' (docs/diffusers.md): .bin weights, '..' or "
            "absolute members and links get 422; unpacked sizes over MAX_ARCHIVE_UNPACKED_BYTES 413; "
            "a UNet over MAX_NETWORK_PARAMETERS 422."),
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "The .safetensors checkpoint, or a .zip/.tar(.gz) "
                                        "diffusers pipeline folder."},
                "config": {"type": "string", "description": CONFIG_FIELD_DESCRIPTION},
            },
        }}},
    }
}


@router.post(
    "", status_code=201, response_model=CheckpointPublic, openapi_extra=CREATE_OPENAPI,
    summary="Upload a checkpoint (.safetensors with the config in its metadata, or a diffusers "
            "pipeline as .zip/.tar)",
    responses=problem_responses(401, 413, 415, 422),
)
async def create_checkpoint(request: Request, response: Response, session: SessionDep,
                            owner: CurrentOwner, settings: SettingsDep,
                            store: ArtifactStoreDep,
                            idempotency_key: IdempotencyKeyHeader = None) -> CheckpointPublic:
    """`Idempotency-Key`: a retry returns the first checkpoint (201, same id); the same key with
    another body is a 422."""
    key = check_key(idempotency_key)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ProblemError(415, "Unsupported Media Type",
                           "send multipart/form-data with the .safetensors file in field 'file' "
                           "(and optionally a JSON 'config' field)", "content-type")
    with store.staging_file(".safetensors") as staging:
        upload = await receive_multipart(request, settings.max_upload_bytes, staging)
        fp = idempotency.upload_fingerprint(upload.fields, upload.sha256)
        prior = await run_in_threadpool(idempotency.prior_resource, session, owner, key,
                                        ENDPOINT, fp, Checkpoint)
        if prior is not None:
            return await run_in_threadpool(_replay, prior, response)
        row = await run_in_threadpool(service.create_from_upload, session, store, settings,
                                      owner, upload)
    checkpoint_id, replayed = await run_in_threadpool(
        idempotency.commit_or_replay, session, owner, key, ENDPOINT, fp, row.id, 201)
    if replayed:
        winner = await run_in_threadpool(service.get_owned, session, owner, checkpoint_id)
        return await run_in_threadpool(_replay, winner, response)
    response.headers["Location"] = f"/v1/checkpoints/{row.id}"
    return service.checkpoint_public(row)


ENDPOINT = "POST /v1/checkpoints"


def _replay(row: Checkpoint, response: Response) -> CheckpointPublic:
    response.headers["Location"] = f"/v1/checkpoints/{row.id}"
    response.headers[REPLAY_HEADER] = "true"
    return service.checkpoint_public(row)


@router.get("", response_model=Page[CheckpointPublic],
            summary="List your checkpoints (newest first)", responses=problem_responses(401, 422))
def list_checkpoints(
    session: SessionDep, owner: CurrentOwner, limit: Limit = 50, offset: Offset = 0,
    source: Annotated[Literal["upload", "training", "diffusers"] | None,
                      Query(description="Only uploaded, training-made or diffusers checkpoints.")]
    = None,
    job_id: Annotated[str | None, Query(description="Only those made by this train job.")] = None,
) -> Page[CheckpointPublic]:
    rows, total = service.list_owned(session, owner, limit, offset, source=source, job_id=job_id)
    return page_of([service.checkpoint_public(r) for r in rows], total, limit, offset)


@router.get("/{checkpoint_id}", response_model=CheckpointPublic,
            summary="Get a checkpoint and its config", responses=problem_responses(401, 404))
def get_checkpoint(checkpoint_id: str, session: SessionDep,
                   owner: CurrentOwner) -> CheckpointPublic:
    return service.checkpoint_public(service.get_owned(session, owner, checkpoint_id))


@router.get(
    "/{checkpoint_id}/download", response_class=StreamingResponse,
    summary="Download the .safetensors file (config in its `neural_entropy` metadata)",
    responses={200: {"content": {CHECKPOINT_MEDIA_TYPE: {}}}, **NOT_MODIFIED_DOC,
               307: {"description": "Redirect to a presigned S3 URL (ARTIFACT_PRESIGNED_DOWNLOADS)."},
               **problem_responses(401, 404)},
)
def download_checkpoint(checkpoint_id: str, request: Request, session: SessionDep,
                        owner: CurrentOwner, store: ArtifactStoreDep) -> Response:
    """Immutable: `ETag` is the file's sha256; `If-None-Match` gets a 304."""
    row = service.get_owned(session, owner, checkpoint_id)
    etag = etag_for(row.sha256)
    return not_modified(request, etag) or blob_response(
        session, store, row.sha256, media_type=CHECKPOINT_MEDIA_TYPE,
        filename=f"{row.id}.safetensors", what=f"file of checkpoint {row.id}",
        headers=cache_headers(etag))


@router.delete("/{checkpoint_id}", status_code=204, response_class=Response,
               summary="Delete a checkpoint (409 while a queued or running job uses it)",
               responses=problem_responses(401, 404, 409))
def delete_checkpoint(checkpoint_id: str, session: SessionDep, owner: CurrentOwner,
                      store: ArtifactStoreDep) -> Response:
    service.delete_owned(session, store, owner, checkpoint_id)
    return Response(status_code=204)
