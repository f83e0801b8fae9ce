"""Job requests (train / measure / sample) with every default documented, and the job document.

The service resolves a request (fills in the data-dependent defaults such as the network for the
data's shape) and stores the resolved document in `Job.request`; the worker reads only that.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- forward processes (MATH.md 1; paper defaults) ----
class VPSpec(_Strict):
    """Variance preserving: beta(s) = beta_min + (beta_max - beta_min) s; kappa = 0.1 is "VPx"."""

    kind: Literal["vp"] = "vp"
    beta_min: float = Field(0.1, ge=0)
    beta_max: float = Field(16.0, gt=0)
    kappa: float = Field(1.0, gt=0)


class SLSpec(_Strict):
    """Straight line: mu = 1 - s, Sigma^2 = sigma0^2 (1 - (1 - s)^2), on [1e-5, 1 - 1e-5]."""

    kind: Literal["sl"] = "sl"
    sigma0: float = Field(0.1, gt=0)


class VPCosineSpec(_Strict):
    """Cosine-schedule VP on [1e-5, 1 - 1e-3]."""

    kind: Literal["vp_cosine"] = "vp_cosine"
    kappa: float = Field(1.0, gt=0)
    c: float = Field(0.008, gt=0)


class VESpec(_Strict):
    """Variance exploding: no drift, geometric sigma from sigma_min to sigma_max."""

    kind: Literal["ve"] = "ve"
    sigma_min: float = Field(0.01, gt=0)
    sigma_max: float = Field(50.0, gt=0)


ProcessSpec = Annotated[VPSpec | SLSpec | VPCosineSpec | VESpec, Field(discriminator="kind")]


class NetworkSpec(BaseModel):
    """Network architecture. Default: the paper's MLP for vector data, a small U-Net for images
    (`models.networks.default_network_config`). Any other key overrides a field of that config
    (e.g. `{"arch": "mlp", "width": 256}`); the resolved config is stored on the job."""

    model_config = ConfigDict(extra="allow")

    arch: Literal["mlp", "unet"] | None = Field(None, description="Default: by the data's shape.")


class TrainingSpec(_Strict):
    epochs: int = Field(50, ge=1, description="Passes over the training split (cap MAX_EPOCHS).")
    batch_size: int = Field(40, ge=1, description="Data points per step (<= training points).")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Adam learning rate.")
    num_steps: int | None = Field(
        None, ge=1, le=1000,
        description="(s, z) throws per data point per step; default 10 for vectors, 1 for images.")
    seed: int = Field(0, ge=0, description="Seed of initialisation and training noise.")
    milestones: list[int] = Field(
        default_factory=list,
        description="Epochs (1..epochs) after which a checkpoint and a measurement are made.")
    weighting: Literal["unit", "likelihood"] = Field("unit", description="Loss weight lambda(s).")
    grad_clip: float | None = Field(None, gt=0, description="Max gradient norm; null: no clip.")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of weights; null: off.")


class MeasurementSpec(_Strict):
    n_times: int = Field(64, ge=2, description="Curve points (cap MAX_CURVE_POINTS).")
    n_samples: int | None = Field(
        None, ge=1,
        description="(x0, z) draws per time; default: the estimator's (cap MAX_N_SAMPLES).")
    seed: int = Field(0, ge=0, description="Seed of the measurement's draws.")
    split: Literal["test", "train"] = Field(
        "test", description="Data to measure on: held-out (default; fresh draws for a mixture) "
        "or the training split.")
    t_min: float | None = Field(None, gt=0, description="Start of the curve; default process's.")
    t_max: float | None = Field(None, gt=0, description="T; default the process's end time.")
    density_bound: bool = Field(False, description="Also compute the NLL bound (nats, bits/dim).")
    data_entropy: bool = Field(False, description="Also estimate the data entropy h(p_data).")


Queue = Literal["auto", "gpu", "cpu"]
_QUEUE_DOC = "RQ queue: auto = gpu when a GPU worker listens, else cpu."


class TrainJobCreate(_Strict):
    """Train a network on a data set, measuring it at each milestone and at the end."""

    type: Literal["train"]
    dataset_id: str
    process: ProcessSpec = VPSpec.model_validate({})
    network: NetworkSpec = NetworkSpec.model_validate({})
    training: TrainingSpec = TrainingSpec.model_validate({})
    measurement: MeasurementSpec = MeasurementSpec.model_validate({})
    queue: Queue = Field("auto", description=_QUEUE_DOC)


class MeasureJobCreate(_Strict):
    """Measure a stored checkpoint on a data set of the checkpoint's shape."""

    type: Literal["measure"]
    checkpoint_id: str
    dataset_id: str
    measurement: MeasurementSpec = MeasurementSpec.model_validate({})
    queue: Queue = Field("auto", description=_QUEUE_DOC)


class SampleJobCreate(_Strict):
    """Draw samples from a checkpoint by the probability-flow ODE."""

    type: Literal["sample"]
    checkpoint_id: str
    n: int = Field(64, ge=1, description="Number of samples (cap MAX_SAMPLE_COUNT).")
    seed: int = Field(0, ge=0)
    solver: Literal["heun", "euler", "adaptive"] = "heun"
    steps: int = Field(100, ge=1, le=10_000, description="Steps of the fixed-step solvers.")
    labels: list[int] | None = Field(None, description="Class labels (class-conditional models).")
    queue: Queue = Field("auto", description=_QUEUE_DOC)


JobCreate = Annotated[
    TrainJobCreate | MeasureJobCreate | SampleJobCreate, Field(discriminator="type")
]


class Progress(BaseModel):
    phase: str = Field(description="queued | starting | training | measuring | sampling | done ...")
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    fraction: float | None = Field(None, description="0..1 of the whole job.")
    eta_seconds: float | None = None


class MilestonePublic(BaseModel):
    epoch: int
    measurement_id: str | None
    checkpoint_id: str | None


class JobPublic(BaseModel):
    id: str
    type: Literal["train", "measure", "sample"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    queue: str
    progress: Progress
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
    compute_seconds: float | None
    links: dict[str, str] = Field(description="Related resources (samples, measurement, ...).")
    request: dict[str, Any] = Field(description="The fully resolved request.")
