"""Storing checkpoints made by training: safetensors (config in its metadata) in the artifact store,
plus a `Checkpoint` row that the API serves and lets users download."""

from __future__ import annotations

import torch
from sqlalchemy.orm import Session

from core.artifacts import get_artifact_store
from core.tables import Checkpoint
from models.checkpoints.config import CheckpointConfig
from models.checkpoints.io import write_checkpoint

SAFETENSORS_MEDIA_TYPE = "application/octet-stream"  # as uploads (no registered type exists)


def store_checkpoint(
    session: Session,
    network: torch.nn.Module,
    config: CheckpointConfig,
    *,
    owner_id: str,
    job_id: str | None,
    epoch: int | None,
) -> Checkpoint:
    """Write `network`'s weights with `config` to the artifact store and add a Checkpoint row."""
    blob = write_checkpoint(network, config)
    sha = get_artifact_store().put_bytes(session, blob, SAFETENSORS_MEDIA_TYPE)
    row = Checkpoint(
        owner_id=owner_id,
        sha256=sha,
        size_bytes=len(blob),
        config=config.to_dict(),
        source="training",
        job_id=job_id,
        epoch=epoch,
    )
    session.add(row)
    session.flush()
    return row
