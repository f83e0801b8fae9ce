"""Sweep requests (a base train request and a grid) and the sweep document (jobs, table, fits)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.jobs import TrainFields
from core.contract import DEFAULT_SUBSET_SEED, NetworkSpec, ProcessSpec, Seed

SweepStatus = Literal["queued", "running", "succeeded", "partial", "failed", "canceled"]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "canceled"]
TrainingBudget = Literal["epochs", "steps"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SweepGrid(_Strict):
    """The axes (any subset); one train job per combination of their values."""

    n_train: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1,
        description="Training-set sizes: nested subsets of the data set's training split, drawn "
        "with the sweep's subset_seed (class-balanced when the data have labels). The held-out "
        "data are the same for every size.")
    seed: list[Seed] | None = Field(
        None, min_length=1, description="Values of training.seed.")
    process: list[ProcessSpec] | None = Field(
        None, min_length=1, description="Forward processes, e.g. [{\"kind\": \"vp\"}, "
        "{\"kind\": \"vp\", \"kappa\": 0.1}, {\"kind\": \"sl\"}].")
    network: list[NetworkSpec] | None = Field(
        None, min_length=1,
        description="Network settings; each entry's keys override those of base.network.")


class SweepCreate(_Strict):
    """A base train request (everything a train job takes, without `type`) and a grid over it."""

    base: TrainFields
    grid: SweepGrid = SweepGrid()
    subset_seed: Seed = Field(DEFAULT_SUBSET_SEED,
                              description="Seed of the nested n_train subsets (every job's).")
    training_budget: TrainingBudget = Field(
        "epochs",
        description="epochs: every job trains base.training.epochs epochs. steps: every job takes "
        "about as many optimizer steps as the largest n_train does in base.training.epochs "
        "epochs (epochs and milestones scaled by ceil(N_max / B) / ceil(N / B), rounded), so "
        "that sizes differ in data, not in training time.")


class SweepCounts(BaseModel):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    total: int = 0


class SweepJob(BaseModel):
    """One grid point's job."""

    id: str
    status: JobStatusName
    n_train: int = Field(description="Training points (the subset's size, or the whole split).")
    seed: int = Field(description="training.seed")
    process: str = Field(description="Process label: the kind and its non-default parameters.")
    network: str | None = Field(description="Network-axis label, or null without that axis.")
    epochs: int
    error: str | None = Field(description="Why the job failed (null otherwise).")
    measurement_id: str | None = Field(description="Final measurement, once succeeded.")


class SweepRow(BaseModel):
    """S_NN of one (n_train, process, network, epoch), aggregated over the seeds measured there."""

    n_train: int
    process: str
    network: str | None
    epoch: int
    final: bool = Field(description="Whether this is the jobs' last epoch (used by the fits).")
    n_seeds: int
    mean: float = Field(description="Mean S_NN over seeds, nats.")
    spread: float | None = Field(description="Standard deviation of S_NN over seeds (null: one).")
    stderr: float = Field(description="Pooled estimator stderr of the mean: sqrt(sum se^2) / K.")
    total_entropy: float | None = Field(description="S_tot (mean over seeds) when known.")
    bits_per_dim: float = Field(description="mean in bits per dimension.")
    measurement_ids: list[str]


class SweepFit(BaseModel):
    """S_NN = a + b ln N over the finished sizes (final epoch), ordinary least squares."""

    process: str
    network: str | None
    a: float | None
    b: float | None
    a_stderr: float | None = Field(description="From the seeds' spread and estimator stderrs.")
    b_stderr: float | None
    a_stderr_residual: float | None = Field(description="Classical, from residuals (n >= 3).")
    b_stderr_residual: float | None
    r_squared: float | None
    n_points: int
    n_train: list[int]
    residuals: list[float]
    note: str | None = Field(description="Set when fewer than 3 sizes have finished.")


class SweepPublic(BaseModel):
    id: str
    status: SweepStatus = Field(
        description="queued | running (some job not final) | succeeded | partial (some failed, "
        "the rest succeeded) | failed (none succeeded) | canceled (some job canceled).")
    created_at: datetime
    counts: SweepCounts
    jobs: list[SweepJob]
    table: list[SweepRow]
    fits: list[SweepFit] = Field(description="One per process (and network) with an n_train axis.")
    request: SweepCreate
    links: dict[str, str]


class SweepSummary(BaseModel):
    id: str
    status: SweepStatus
    created_at: datetime
    counts: SweepCounts
    links: dict[str, str]


class SweepTable(BaseModel):
    rows: list[SweepRow]
