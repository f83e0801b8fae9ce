"""Storing checkpoints made by training: safetensors (config in its metadata) in the artifact store,
plus a `Checkpoint` row that the API serves and lets users download."""

from __future__ import annotations

from typing import Any

import torch
from sqlalchemy.orm import Session

from app.artifacts import get_artifact_store
from app.tables import Checkpoint

SAFETENSORS_MEDIA_TYPE = "application/octet-stream"  # as uploads (no registered type exists)


def checkpoint_config(
    *,
    network: dict[str, Any],
    process: dict[str, Any],
    event_shape: tuple[int, ...],
    value_range: tuple[float, float] | None,
    num_classes: int | None,
    provenance: dict[str, Any],
    parametrization: str = "entropy_matching",
) -> Any:
    """A validated `models.checkpoints.io.CheckpointConfig`."""
    from models.checkpoints.io import CheckpointConfig

    return CheckpointConfig.from_dict(
        {
            "network": network,
            "process": process,
            "event_shape": list(event_shape),
            "parametrization": parametrization,
            "value_range": None if value_range is None else list(value_range),
            "num_classes": num_classes,
            "provenance": provenance,
        }
    )


def store_checkpoint(
    session: Session,
    network: torch.nn.Module,
    config: Any,
    *,
    owner_id: str,
    job_id: str | None,
    epoch: int | None,
) -> Checkpoint:
    """Write `network`'s weights with `config` to the artifact store and add a Checkpoint row."""
    from models.checkpoints.io import write_checkpoint

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
