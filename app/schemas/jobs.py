"""Job requests (train / measure / sample) and the job document.

The sections of a request and their defaults live in `core.contract`; the service resolves a
request (fills in the data-dependent defaults such as the network for the data's shape) into the
contract's resolved spec, stored in `Job.request`; the worker reads only that.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract import (
    DEFAULT_PROCESS,
    DEFAULT_SUBSET_SEED,
    Convergence,
    JobProgress,
    JobSpec,
    MeasurementSpec,
    NetworkSpec,
    ProcessSpec,
    QueueChoice,
    SampleOptions,
    Seed,
    TrainingSpec,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


_QUEUE_DOC = "RQ queue: auto = gpu when a GPU worker listens, else cpu."


class TrainFields(_Strict):
    """Everything a train job takes except its `type` (also a sweep's `base`)."""

    dataset_id: str
    process: ProcessSpec = DEFAULT_PROCESS
    network: NetworkSpec = NetworkSpec.model_validate({})
    training: TrainingSpec = TrainingSpec.model_validate({})
    measurement: MeasurementSpec = MeasurementSpec.model_validate({})
    queue: QueueChoice = Field("auto", description=_QUEUE_DOC)
    n_train: int | None = Field(
        None, ge=1,
        description="Train on a nested subset of this many of the data set's training points "
        "(the first n of one ordering drawn with subset_seed, so smaller sets lie inside larger "
        "ones; class-balanced when the data have labels). The held-out data stay the data set's "
        "own. Default: all training points.")
    subset_seed: Seed = Field(DEFAULT_SUBSET_SEED,
                             description="Seed of the nested subsets' ordering.")


class TrainJobCreate(TrainFields):
    """Train a network on a data set, measuring it at each milestone and at the end."""

    type: Literal["train"]


class MeasureJobCreate(_Strict):
    """Measure a stored checkpoint on a data set of the checkpoint's shape."""

    type: Literal["measure"]
    checkpoint_id: str
    dataset_id: str
    measurement: MeasurementSpec = MeasurementSpec.model_validate({})
    queue: QueueChoice = Field("auto", description=_QUEUE_DOC)


class SampleJobCreate(SampleOptions):
    """Draw samples from a checkpoint by the probability-flow ODE."""

    type: Literal["sample"]
    checkpoint_id: str
    queue: QueueChoice = Field("auto", description=_QUEUE_DOC)


JobCreate = Annotated[
    TrainJobCreate | MeasureJobCreate | SampleJobCreate, Field(discriminator="type")
]


class MilestonePublic(BaseModel):
    epoch: int
    measurement_id: str | None
    checkpoint_id: str | None


class JobPublic(BaseModel):
    id: str
    type: Literal["train", "measure", "sample"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    queue: str
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Readable reason of a failure (never a stack trace).")
    cancel_requested: bool
    dataset_id: str | None
    input_checkpoint_id: str | None
    measurement_id: str | None = Field(description="Final measurement (train and measure jobs).")
    checkpoint_id: str | None = Field(description="Final checkpoint (train jobs).")
    milestones: list[MilestonePublic]
    device: str | None
    attempts: int = Field(description="Runs of this job so far (a run lost with its worker is "
                          "taken over by another run, which resumes it).")
    compute_seconds: float | None = Field(
        description="Worker seconds spent on this job, summed over every attempt (a killed "
        "attempt's time up to its last lease renewal included).")
    sweep_id: str | None = Field(None, description="The sweep this job belongs to, if any.")
    links: dict[str, str] = Field(description="Related resources (samples, measurement, ...).")
    request: JobSpec = Field(description="The fully resolved request (every default filled in).")
    convergence: Convergence | None = Field(
        description="Train jobs: the S_NN trajectory over the epochs and the convergence verdict "
        "(null until the first estimate).")
