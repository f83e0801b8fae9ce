"""Measurement documents and curve rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from core.contract import (
    DataEntropySummary,
    DensityBoundSummary,
    MeasurementSummary,
    NeuralEntropySummary,
    Reproducibility,
    TotalEntropySummary,
)

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
    neural_entropy: NeuralEntropySummary = Field(description="S_NN(T), the neural entropy.")
    total_entropy: TotalEntropySummary | None = Field(
        description="S_tot(T) when the data's score is known (mixtures), else null.")
    density_bound: DensityBoundSummary | None = Field(
        description="NLL bound when asked for, else null.")
    data_entropy: DataEntropySummary | None = Field(
        description="h(p_data) estimate when asked for, else null.")
    t_min: float | None
    t_max: float | None
    n_evaluations: int = Field(description="Network evaluations the estimate used.")
    dim: int
    n_points: int = Field(description="Rows of the curve.")
    summary: MeasurementSummary = Field(description="The stored summary document.")
    reproducibility: Reproducibility
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
