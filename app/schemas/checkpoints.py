"""Checkpoint documents. The upload itself is multipart (`file` + optional `config` JSON field).

The config is `models.checkpoints.io.CheckpointConfig.to_dict()`: format_version, network,
parametrization, process, event_shape, value_range, num_classes, provenance (docs/checkpoints.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

CHECKPOINT_MEDIA_TYPE = "application/octet-stream"  # safetensors has no registered media type

CONFIG_FIELD_DESCRIPTION = (
    "Optional JSON object that fills in or overrides the config in the file's "
    "`neural_entropy` metadata: top-level keys replace; `network`/`process` are merged key by key "
    "when they name the same arch/kind (replaced otherwise); `provenance` is merged. A file "
    "without metadata needs the whole config here."
)


class CheckpointPublic(BaseModel):
    """A stored checkpoint: network weights (safetensors) and the config needed to read them."""

    id: str
    config: dict[str, Any] = Field(
        description="The normalised config stored in the file's metadata: format_version, network "
        "(arch and every field), parametrization (entropy_matching | scaled_entropy_matching | score | noise "
        "| v_prediction | sample), process (spec "
        "with every field), event_shape, value_range, num_classes, provenance.")
    parametrization: str = Field(description="How the network output is read: entropy_matching "
                                 "(e_theta), score, noise (score = -eps / Sigma(s); diffusers' epsilon), "
                                 "v_prediction or sample (docs/diffusers.md).")
    arch: str = Field(description="Network architecture: mlp | unet | diffusers_unet2d.")
    event_shape: list[int] = Field(description="Shape of one data point: [D] or [C, H, W].")
    num_classes: int | None = Field(description="Class count of a class-conditional network.")
    sha256: str = Field(description="sha256 of the stored .safetensors file (the download).")
    size_bytes: int = Field(description="Size of the stored file in bytes.")
    source: Literal["upload", "training", "diffusers"] = Field(
        description="Uploaded (.safetensors), made by a train job, or a diffusers pipeline archive.")
    job_id: str | None = Field(description="The train job that produced it (source = training).")
    epoch: int | None = Field(description="Epoch at which training saved it (source = training).")
    download_url: str = Field(description="Where to GET the .safetensors file.")
    created_at: datetime
