"""Checkpoints: create from an upload, list, get, delete, locate for download.

An upload is validated completely (`models.checkpoints.io.read_checkpoint`: container, metadata,
config, tensor names/shapes/dtypes against the architecture) before anything is stored. What is
stored is the canonical file: the same tensors, rewritten with the merged and normalised config
as metadata, so the download always carries the config the service uses (for uploads and for the
checkpoints train jobs register through `worker.checkpoints.store_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import ProblemError, conflict, not_found, over_limit, unprocessable
from app.schemas.checkpoints import CHECKPOINT_MEDIA_TYPE, CheckpointPublic
from app.services.network_limits import check_network_size
from app.services.pages import newest_first_page
from app.services.uploads import ReceivedUpload, too_large
from core.artifacts import ArtifactStore
from core.settings import Settings
from core.tables import Checkpoint, Job, JobStatus, Owner
from models.checkpoints.config import CheckpointConfig, merge_config
from models.checkpoints.format import parse_header
from models.checkpoints.io import (
    CheckpointError,
    CheckpointTooLarge,
    NotSafetensors,
    metadata_config,
    read_checkpoint,
    write_checkpoint,
)
from models.pipelines.archive import ArchiveLimits, ArchiveTooLarge, archive_kind, read_pipeline

ACTIVE_STATUSES = (JobStatus.queued.value, JobStatus.running.value)
FORM_FIELDS = ("config",)


# ---- documents ----
def checkpoint_public(row: Checkpoint) -> CheckpointPublic:
    config = row.config or {}
    return CheckpointPublic(
        id=row.id, config=config, parametrization=str(config.get("parametrization", "")),
        arch=str((config.get("network") or {}).get("arch", "")),
        event_shape=[int(d) for d in config.get("event_shape") or []],
        num_classes=config.get("num_classes"), sha256=row.sha256, size_bytes=int(row.size_bytes),
        source=row.source, job_id=row.job_id, epoch=row.epoch,  # type: ignore[arg-type]
        download_url=f"/v1/checkpoints/{row.id}/download", created_at=row.created_at,
    )


# ---- creation ----
def problem_from(exc: CheckpointError, limit: int) -> ProblemError:
    """The HTTP problem for a refused checkpoint: 413 size, 415 other formats, 422 otherwise."""
    if isinstance(exc, ArchiveTooLarge):
        return ProblemError(413, "Content Too Large", str(exc), "file", reason=exc.code, limit=exc.limit,
                            limit_setting=exc.setting)
    if isinstance(exc, CheckpointTooLarge):
        return too_large(limit)
    if isinstance(exc, NotSafetensors):
        return ProblemError(415, "Unsupported Media Type", str(exc), exc.field, reason=exc.code)
    extra: dict[str, Any] = {"reason": exc.code}
    if exc.offending:
        extra["offending_tensors"] = exc.offending
    return unprocessable(str(exc), exc.field, **extra)


def parse_config_field(fields: dict[str, str]) -> dict[str, Any] | None:
    """The optional `config` form field as a JSON object; 422 naming the field otherwise."""
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        raise unprocessable(f"unknown form field {unknown[0]!r}; the upload takes 'file' and an "
                            "optional 'config'", unknown[0])
    raw = fields.get("config")
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise unprocessable(f"config is not valid JSON: {exc}", "config") from None
    if not isinstance(value, dict):
        raise unprocessable("config must be a JSON object", "config")
    return value


def create_from_upload(session: Session, store: ArtifactStore, settings: Settings, owner: Owner,
                       upload: ReceivedUpload) -> Checkpoint:
    """Validate the staged upload and store its canonical form; nothing is stored on failure.

    A .zip / .tar(.gz) (recognised by its first bytes) is a diffusers pipeline folder
    (`create_from_pipeline`); anything else must be a safetensors checkpoint."""
    assert upload.file_path is not None
    overrides = parse_config_field(upload.fields)
    with Path(upload.file_path).open("rb") as f:
        kind = archive_kind(f.read(512))
    if kind is not None:
        if overrides is not None:
            raise unprocessable("the 'config' field applies to .safetensors uploads; a pipeline archive "
                                "carries its own unet/config.json and scheduler/scheduler_config.json", "config")
        return create_from_pipeline(session, store, settings, owner, upload)
    limit = settings.max_upload_bytes
    data = Path(upload.file_path).read_bytes()
    try:
        check_before_building(data, limit, overrides, settings)
        config, tensors = read_checkpoint(data, limit, overrides=overrides)
        canonical = write_checkpoint(tensors, config, check=False)
    except CheckpointError as exc:
        raise problem_from(exc, limit) from None
    del data, tensors
    return _store(session, store, owner.id, canonical, config.to_dict(), source="upload")


def check_before_building(data: bytes, limit: int, overrides: dict[str, Any] | None,
                          settings: Settings) -> None:
    """Caps read from the header and the config alone, before any tensor is loaded or any
    architecture built: at most MAX_CHECKPOINT_TENSORS tensors, and a network within
    MAX_NETWORK_LAYERS and MAX_NETWORK_PARAMETERS (422 naming the cap)."""
    header = parse_header(data, limit)
    if len(header.tensors) > settings.max_checkpoint_tensors:
        raise over_limit("file", f"{len(header.tensors)} tensors",
                         settings.max_checkpoint_tensors, "max_checkpoint_tensors")
    base = metadata_config(header)
    if base is None and not overrides:
        return  # read_checkpoint explains what is missing
    config = CheckpointConfig.from_dict(merge_config(base, overrides))
    check_network_size(config.network_config(), settings)


def create_from_pipeline(session: Session, store: ArtifactStore, settings: Settings, owner: Owner,
                         upload: ReceivedUpload) -> Checkpoint:
    """A diffusers pipeline archive -> a checkpoint with source "diffusers" (docs/diffusers.md).

    The archive is read member by member with its caps (`models.pipelines.archive`); the UNet's
    parameter count is checked before any weight is allocated, its tensors against the architecture
    (`models.pipelines.convert`). What is stored is our canonical safetensors file: the UNet's weights
    under diffusers' names, with the derived config (network, discrete process, parametrization) in
    its metadata. Any refusal stores nothing."""
    from models.pipelines.convert import pipeline_checkpoint  # imports diffusers on first use

    assert upload.file_path is not None
    limits = ArchiveLimits(max_members=settings.max_archive_members,
                           max_unpacked_bytes=settings.max_archive_unpacked_bytes)
    try:
        files = read_pipeline(Path(upload.file_path), limits)
        config, tensors, _ = pipeline_checkpoint(files, max_parameters=settings.max_network_parameters,
                                                 max_bytes=settings.max_archive_unpacked_bytes)
        config = dataclasses.replace(config, provenance={
            **config.provenance, "archive_sha256": upload.sha256, "archive_root": files.root})
        canonical = write_checkpoint(tensors, config, check=False)
    except CheckpointError as exc:
        raise problem_from(exc, settings.max_upload_bytes) from None
    del files, tensors
    return _store(session, store, owner.id, canonical, config.to_dict(), source="diffusers")


def _store(session: Session, store: ArtifactStore, owner_id: str, blob: bytes,
           config: dict[str, Any], *, source: str, job_id: str | None = None,
           epoch: int | None = None) -> Checkpoint:
    sha = store.put_bytes(session, blob, CHECKPOINT_MEDIA_TYPE)
    row = Checkpoint(owner_id=owner_id, sha256=sha, size_bytes=len(blob), config=config,
                     source=source, job_id=job_id, epoch=epoch)
    session.add(row)
    session.flush()
    return row


# ---- queries ----
def get_owned(session: Session, owner: Owner, checkpoint_id: str,
              field: str | None = None) -> Checkpoint:
    """The owner's checkpoint; 404 when it does not exist or belongs to someone else."""
    row = session.get(Checkpoint, checkpoint_id)
    if row is None or row.owner_id != owner.id:
        raise not_found("checkpoint", checkpoint_id, field)
    return row


def list_owned(session: Session, owner: Owner, limit: int, offset: int, *,
               source: str | None = None, job_id: str | None = None
               ) -> tuple[list[Checkpoint], int]:
    """A page of the owner's checkpoints, newest first, optionally by source or producing job."""
    where = [Checkpoint.owner_id == owner.id]
    if source is not None:
        where.append(Checkpoint.source == source)
    if job_id is not None:
        where.append(Checkpoint.job_id == job_id)
    return newest_first_page(session, Checkpoint, where, limit, offset)


def delete_owned(session: Session, store: ArtifactStore, owner: Owner, checkpoint_id: str) -> None:
    """Delete a checkpoint: 409 while a queued/running job reads it; blob removed if unreferenced.

    Finished jobs keep their resolved request (with the checkpoint id) but lose the link.
    """
    row = get_owned(session, owner, checkpoint_id)
    active = session.scalars(
        select(Job.id).where(Job.input_checkpoint_id == row.id, Job.status.in_(ACTIVE_STATUSES))
        .limit(5)
    ).all()
    if active:
        raise conflict(f"checkpoint {row.id} is used by active jobs {list(active)}; cancel them "
                       "or wait until they finish", jobs=list(active))
    session.execute(update(Job).where(Job.input_checkpoint_id == row.id)
                    .values(input_checkpoint_id=None))
    sha = row.sha256
    session.delete(row)
    session.flush()
    store.delete_if_unreferenced(session, sha)

