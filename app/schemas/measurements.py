"""Measurement documents and curve rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

CURVE_COLUMNS = ("s", "rate", "rate_stderr", "cumulative", "cumulative_stderr",
                 "total_rate", "total_rate_stderr", "total_cumulative")


class MeasurementPublic(BaseModel):
    """A neural-entropy measurement; entropies in nats (bits = nats / ln 2)."""

    id: str
    job_id: str | None
    dataset_id: str | None
    checkpoint_id: str | None
    epoch: int | None = Field(description="Training epoch of the measured weights, if known.")
    created_at: datetime
    neural_entropy: dict[str, Any] | None = Field(
        description="S_NN(T): {nats, bits, bits_per_dim, stderr (nats)}.")
    total_entropy: dict[str, Any] | None = Field(
        description="S_tot(T) {nats, stderr} when the data's score is known (mixtures), else null.")
    density_bound: dict[str, Any] | None = Field(description="NLL bound when asked for, else null.")
    data_entropy: dict[str, Any] | None = Field(description="h(p_data) estimate when asked for.")
    t_min: float | None
    t_max: float | None
    n_evaluations: int | None = Field(description="Network evaluations the estimate used.")
    dim: int | None
    n_points: int = Field(description="Rows of the curve.")
    summary: dict[str, Any] = Field(description="The stored summary document, as is.")
    reproducibility: dict[str, Any] = Field(
        description="data_sha256, dataset_id, split, process, network, training, estimator, seed, "
        "device, code_version, checkpoint_id, epoch.")
    links: dict[str, str]


class CurvePointPublic(BaseModel):
    """One curve row: rate dS/ds in nats per unit s, cumulative S(s) in nats."""

    s: float
    rate: float
    rate_stderr: float
    cumulative: float
    cumulative_stderr: float | None
    total_rate: float | None = Field(description="dS_tot/ds when known.")
    total_rate_stderr: float | None
    total_cumulative: float | None = Field(description="S_tot(s) when known.")


class CurvePublic(BaseModel):
    measurement_id: str
    columns: list[str]
    has_total: bool = Field(description="Whether the S_tot columns are filled.")
    points: list[CurvePointPublic]
