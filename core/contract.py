"""The one contract between the API and the worker: every job parameter's default, the resolved job
specs, and the documents the worker writes back.

- Request sections (`TrainingSpec`, `MeasurementSpec`, `SampleOptions`, the process specs) carry
  the defaults a client gets; the API embeds them in its request bodies.
- The API resolves a request into a `TrainJobSpec`, `MeasureJobSpec` or `SampleJobSpec` (every
  field filled in, nothing left to default) and stores `spec.model_dump(mode="json")` in
  `Job.request`; the worker reads it back with `parse_job_spec`. A resolved spec has no defaults:
  a missing or unknown field is an error on both sides.
- The worker writes `JobProgress` into `Job.progress`, and a `MeasurementSummary` and a
  `Reproducibility` record on every `Measurement`; the API serves them as they are.
- `DatasetSplit` is how a dataset row records its train/held-out split (written by the API,
  read by the worker).

Entropies are in nats unless a field says bits (bits = nats / ln 2; per dim divides by D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

NUM_STEPS_VECTORS = 10  # throws per point per step for vector data (the paper's mixtures)
NUM_STEPS_IMAGES = 1  # ... and for images (the paper's MNIST / CIFAR-10 runs)
DEFAULT_TEST_FRACTION = 0.1  # held-out share of uploaded and built-in sets
DEFAULT_SPLIT_SEED = 0
DEFAULT_SUBSET_SEED = 0  # seed of the nested training subsets (train jobs' and sweeps' subset_seed)

QueueChoice = Literal["auto", "gpu", "cpu"]
QueueName = Literal["gpu", "cpu"]
Weighting = Literal["unit", "likelihood"]
Split = Literal["test", "train", "both"]
Solver = Literal["heun", "euler", "adaptive"]
JobTypeName = Literal["train", "measure", "sample"]
RecipeName = Literal["converged", "paper"]
LrSchedule = Literal["constant", "cosine"]
TrainedParametrization = Literal["entropy_matching", "scaled_entropy_matching"]
DEFAULT_CONVERGENCE_TOLERANCE = 0.02  # relative drift of S_NN per doubling of the epochs

# Training recipes: the fields of `models.training.TrainingConfig` each one sets. "paper" is the
# paper's recipe exactly (constant lr, live weights, times uniform in s); "converged" is the
# default, chosen by bench/bench_recipes.py on mixtures it was not tuned on (docs/recipes.md).
TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"batch_size": 40, "lr": 1e-4, "weighting": "unit", "grad_clip": None,
              "ema_decay": None, "lr_schedule": "constant", "lr_final_fraction": 0.0,
              "warmup_steps": 0, "log_snr_share": 0.0, "parametrization": "entropy_matching"},
    "converged": {"batch_size": 40, "lr": 1e-4, "weighting": "unit", "grad_clip": None,
                  "ema_decay": 0.999, "lr_schedule": "cosine", "lr_final_fraction": 0.1,
                  "warmup_steps": 500, "log_snr_share": 1.0,
                  "parametrization": "scaled_entropy_matching"},
}


MAX_SEED = 2**32 - 1  # seeds are 32-bit unsigned (numpy's and torch's common range)
MAX_LABEL = 2**31 - 2  # class labels: num_classes = label + 1 fits a 32-bit INTEGER column

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Label = Annotated[int, Field(ge=0, le=MAX_LABEL)]


class _Strict(BaseModel):
    """Request and contract sections: unknown fields refused; numbers strict (no strings or
    booleans for numbers, no floats for integers); floats finite (no Infinity or NaN)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---- forward processes (docs/math.md §1; the paper's defaults) ----
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


class DiscreteSpec(_Strict):
    """A discrete scheduler's table (diffusers DDPM/DDIM) as a process: abar_k exact at
    s_k = (k+1)/T, log-SNR linear in s between them (docs/diffusers.md)."""

    kind: Literal["discrete"] = "discrete"
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = Field(0.0001, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    num_train_timesteps: int = Field(1000, ge=2, le=100_000)


ProcessSpec = Annotated[VPSpec | SLSpec | VPCosineSpec | VESpec | DiscreteSpec, Field(discriminator="kind")]
DEFAULT_PROCESS: ProcessSpec = VPSpec()


# ---- request sections, with the defaults a client gets ----
class NetworkSpec(BaseModel):
    """Network architecture. Default: the paper's MLP for vector data, a small U-Net for images
    (`models.networks.default_network_config`). Any other key overrides a field of that config
    (e.g. `{"arch": "mlp", "width": 256}`); the resolved config is stored on the job."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    arch: Literal["mlp", "unet"] | None = Field(None, description="Default: by the data's shape.")


class TrainingSpec(_Strict):
    """Training settings. `recipe` sets every optimisation field; any field given here overrides
    that one field and keeps the rest of the recipe (so `lr` is the peak of the recipe's schedule).
    Fields left out take the recipe's value; `grad_clip: null` / `ema_decay: null` turn them off."""

    recipe: RecipeName = Field(
        "converged", description="converged: the default, measured to converge (docs/recipes.md); "
        "paper: the paper's recipe exactly (constant lr 1e-4, live weights, times uniform in s).")
    epochs: int = Field(50, ge=1, description="Passes over the training split (cap MAX_EPOCHS); "
                        "the cap when stop_when_converged.")
    batch_size: int | None = Field(None, ge=1, description="Data points per step (<= training "
                                   "points); default: the recipe's.")
    lr: float | None = Field(None, gt=0, le=1.0, description="Adam learning rate, the peak of "
                             "the schedule; default: the recipe's.")
    num_steps: int | None = Field(
        None, ge=1, le=1000,
        description=f"(s, z) throws per data point per step; default {NUM_STEPS_VECTORS} for "
        f"vectors, {NUM_STEPS_IMAGES} for images.")
    seed: Seed = Field(0, description="Seed of initialisation and training noise.")
    milestones: list[int] = Field(
        default_factory=list,
        description="Epochs (1..epochs) after which a checkpoint and a measurement are made.")
    weighting: Weighting | None = Field(None, description="Loss weight lambda(s); default: the "
                                        "recipe's.")
    grad_clip: float | None = Field(None, gt=0, description="Max gradient norm; null: no clip; "
                                    "default: the recipe's.")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of the weights, measured "
                                    "instead of them; null: off; default: the recipe's.")
    lr_schedule: LrSchedule | None = Field(None, description="constant or cosine (from lr down to "
                                           "lr * lr_final_fraction); default: the recipe's.")
    lr_final_fraction: float | None = Field(None, ge=0, le=1, description="End of the cosine "
                                            "schedule as a fraction of lr; default: the recipe's.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear lr warm-up (optimizer "
                                     "steps; at most a tenth of the run); default: the recipe's.")
    log_snr_share: float | None = Field(
        None, ge=0, le=1, description="Share of training times drawn uniformly in log-SNR (the "
        "entropy's own weighting), the rest uniformly in s; default: the recipe's.")
    parametrization: TrainedParametrization | None = Field(
        None, description="What the network outputs: e_theta (entropy_matching, the paper's) or "
        "k^2 e_theta (scaled_entropy_matching: the same model in the equilibrium's units, k^2 its "
        "variance; identical for k = 1); default: the recipe's.")
    stop_when_converged: bool = Field(
        False, description="End the job once the convergence verdict is `converged` (epochs is "
        "the cap).")
    convergence_tolerance: float = Field(
        DEFAULT_CONVERGENCE_TOLERANCE, gt=0, lt=1,
        description="Allowed relative drift of S_NN per doubling of the epochs for `converged`.")

    def recipe_fields(self) -> dict[str, Any]:
        """The recipe's optimisation fields, overridden by those given in this request."""
        given = {k: getattr(self, k) for k in TRAINING_RECIPES[self.recipe]
                 if k in self.model_fields_set}
        return {**TRAINING_RECIPES[self.recipe], **given}


class MeasurementSpec(_Strict):
    n_times: int = Field(64, ge=2, description="Curve points (cap MAX_CURVE_POINTS).")
    n_samples: int | None = Field(
        None, ge=1,
        description="Network evaluations for the whole curve, over all times; default: the "
        "estimator's own (65536) (cap MAX_N_SAMPLES).")
    seed: Seed = Field(0, description="Seed of the measurement's draws.")
    split: Split = Field(
        "test", description="Data to measure on: held-out (default; fresh draws for a mixture), "
        "the training split, or both (neural_entropy stays the held-out figure; the training "
        "figure and the gap go in `generalization`).")
    t_min: float | None = Field(None, gt=0, description="Start of the curve; default process's.")
    t_max: float | None = Field(None, gt=0, description="T; default the process's end time.")
    density_bound: bool = Field(False, description="Also compute the NLL bound (nats, bits/dim).")
    data_entropy: bool = Field(False, description="Also estimate the data entropy h(p_data).")


class SampleOptions(_Strict):
    """How to draw samples from a checkpoint by the probability-flow ODE."""

    n: int = Field(64, ge=1, description="Number of samples (cap MAX_SAMPLE_COUNT).")
    seed: Seed = 0
    solver: Solver = "heun"
    steps: int = Field(100, ge=1, le=10_000, description="Steps of the fixed-step solvers.")
    labels: list[Label] | None = Field(None, description="Class labels (class-conditional models).")


# ---- resolved specs: what the API stores in Job.request and the worker runs ----
class ResolvedTraining(_Strict):
    """`TrainingSpec` with the recipe and every default filled in. All but `recipe`,
    `parametrization` and the convergence fields are fields of `models.training.TrainingConfig`
    (`training_config_fields`)."""

    recipe: RecipeName
    epochs: int
    batch_size: int
    lr: float
    num_steps: int
    seed: int
    milestones: list[int]
    weighting: Weighting
    grad_clip: float | None
    ema_decay: float | None
    lr_schedule: LrSchedule
    lr_final_fraction: float
    warmup_steps: int
    log_snr_share: float
    parametrization: TrainedParametrization
    stop_when_converged: bool
    convergence_tolerance: float

    def training_config_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"recipe", "parametrization", "stop_when_converged",
                                        "convergence_tolerance"})


class ResolvedMeasurement(_Strict):
    """`MeasurementSpec` with the estimator's budget and the process's time range filled in."""

    n_times: int
    n_samples: int
    seed: int
    split: Split
    t_min: float
    t_max: float
    density_bound: bool
    data_entropy: bool


class TrainJobSpec(_Strict):
    type: Literal["train"]
    dataset_id: str
    data_sha256: str
    process: ProcessSpec
    network: dict[str, Any] = Field(
        description="The resolved network config (`models.networks` config.to_dict(), with arch).")
    training: ResolvedTraining
    measurement: ResolvedMeasurement
    queue: QueueName
    n_train: int | None = Field(
        description="Train on this nested subset of the training split (null: all of it).")
    subset_seed: int = Field(description="Seed of the nested subset's ordering.")


class MeasureJobSpec(_Strict):
    type: Literal["measure"]
    checkpoint_id: str
    dataset_id: str
    data_sha256: str
    process: ProcessSpec
    measurement: ResolvedMeasurement
    queue: QueueName


class SampleJobSpec(_Strict):
    type: Literal["sample"]
    checkpoint_id: str
    n: int
    seed: int
    solver: Solver
    steps: int
    labels: list[int] | None = Field(description="One class label per sample, or null.")
    queue: QueueName


JobSpec = Annotated[TrainJobSpec | MeasureJobSpec | SampleJobSpec, Field(discriminator="type")]
_JOB_SPEC: TypeAdapter[TrainJobSpec | MeasureJobSpec | SampleJobSpec] = TypeAdapter(JobSpec)


def parse_job_spec(doc: Mapping[str, Any]) -> TrainJobSpec | MeasureJobSpec | SampleJobSpec:
    """The resolved spec stored in `Job.request` (pydantic ValidationError if it is not one)."""
    return _JOB_SPEC.validate_python(dict(doc))


# ---- dataset rows ----
class DatasetSplit(_Strict):
    """How a dataset row is split: the held-out share and seed, the resulting sizes, and where
    held-out data come from (`split`: that share of the set; `fresh_draws`: new mixture draws)."""

    test_fraction: float
    seed: int
    n_train: int
    n_test: int
    held_out: Literal["split", "fresh_draws"]


# ---- documents the worker writes ----
class JobProgress(BaseModel):
    phase: str = Field(description="queued | waiting_for_worker (queued, and no live worker "
                       "listens on its queue) | waiting_in_sweep (queued; its sweep puts it on "
                       "the queue when one of its jobs in flight ends, SWEEP_JOBS_IN_FLIGHT) | "
                       "requeued (its run was lost; it resumes) | "
                       "starting | training | milestone | measuring | loading | sampling | done | "
                       "failed | canceled")
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    fraction: float | None = Field(None, description="0..1 of the whole job.")
    eta_seconds: float | None = None


class NeuralEntropySummary(BaseModel):
    """S_NN(T), the neural entropy, with its standard error."""

    nats: float
    bits: float
    bits_per_dim: float
    stderr: float = Field(description="Standard error in nats.")
    stderr_bits: float = Field(description="Standard error in bits.")


class TotalEntropySummary(BaseModel):
    """S_TOT(T), the entropy the diffusion produces (known when the data's score is: mixtures)."""

    nats: float
    bits: float
    stderr: float = Field(description="Standard error in nats.")


class DensityBoundSummary(BaseModel):
    """Upper bound on the mean -log p(x) over the measured data (docs/math.md §3.5)."""

    nats: float = Field(description="Per data point.")
    stderr: float
    bits_per_dim: float = Field(description="Includes offset_bits_per_dim for 8-bit images.")
    bits_per_dim_stderr: float
    prior_nats: float = Field(description="The exact E[-log pi(y_T)] part of `nats`.")
    offset_bits_per_dim: float = Field(description="8-bit discretisation offset (0 if none).")


class DataEntropySummary(BaseModel):
    """h(p_data) estimated as E[-log p_eq(x)] - S_NN(T) - KL(p_T || p_eq) (docs/math.md §3.6)."""

    nats: float
    stderr: float


class GeneralizationSummary(BaseModel):
    """S_NN on the training points beside the held-out S_NN (`split: both`). The gap is the
    entropy the network holds about its own training points beyond their distribution: a
    memorisation signal (about 0 for a network that generalises)."""

    train: NeuralEntropySummary = Field(description="S_NN measured on the training points.")
    gap_nats: float = Field(description="S_NN(train) - S_NN(held-out), nats.")
    gap_stderr: float = Field(description="Standard error of the gap (independent draws), nats.")
    relative_gap: float | None = Field(description="gap_nats / S_NN(held-out) (null if that is 0).")


class MeasurementSummary(BaseModel):
    """The numbers of one measurement (`Measurement.summary`)."""

    neural_entropy: NeuralEntropySummary
    total_entropy: TotalEntropySummary | None = Field(
        description="S_tot(T) when the data's score is known (mixtures), else null.")
    density_bound: DensityBoundSummary | None = Field(description="When asked for, else null.")
    data_entropy: DataEntropySummary | None = Field(description="When asked for, else null.")
    t_min: float | None = Field(description="Start of the integral.")
    t_max: float | None = Field(description="End T of the integral.")
    n_evaluations: int = Field(description="Network evaluations the estimate used.")
    dim: int = Field(description="Numbers per data point D.")
    n_pool: int | None = Field(None, description="Data points the x0 were drawn from.")
    generalization: GeneralizationSummary | None = Field(
        None, description="With `split: both`: the training-split figure and the gap.")


class ConvergencePoint(BaseModel):
    """A cheap S_NN estimate of the network after `epoch` epochs (the EMA weights when kept)."""

    epoch: int
    nats: float
    stderr: float


class ExtrapolatedPoint(BaseModel):
    epoch: int
    nats: float


class Convergence(BaseModel):
    """Whether a train job's S_NN has converged: the trend of its estimates against log(epoch)
    over the last two doublings of the epochs, judged against their noise (docs/math.md §4.7)."""

    verdict: Literal["converged", "not_converged", "too_short"]
    tolerance: float = Field(description="Allowed |relative drift| per doubling of the epochs.")
    relative_drift: float | None = Field(
        description="Fitted change of S_NN per doubling of the epochs, relative to its level.")
    relative_drift_stderr: float | None
    level_nats: float | None = Field(description="The trend's S_NN at the last estimate.")
    extrapolated: ExtrapolatedPoint | None = Field(
        description="Where the trend goes: its S_NN at twice the last epoch.")
    window: list[int] | None = Field(description="First and last epoch of the fit.")
    reason: str
    stopped_at_epoch: int | None = Field(
        None, description="The epoch at which a stop_when_converged job ended early.")
    trajectory: list[ConvergencePoint]


class Reproducibility(BaseModel):
    """Everything needed to reproduce a measurement (`Measurement.reproducibility`)."""

    data_sha256: str | None
    dataset_id: str | None
    split: Split | None
    process: dict[str, Any] = Field(description="The process spec, every field.")
    network: dict[str, Any] | None = Field(description="The network config, every field.")
    parametrization: str = Field(
        description="entropy_matching | scaled_entropy_matching | score | noise | v_prediction | sample.")
    training: dict[str, Any] | None = Field(description="The resolved training settings, if known.")
    estimator: dict[str, Any] = Field(description="`models.entropy.MeasurementConfig`, every field.")
    seed: int | None = Field(description="Seed of the measurement's draws.")
    device: str | None
    code_version: str
    torch_version: str
    torch_threads: int | None = Field(None, description="CPU threads of torch's ops in the job "
                                      "(WORKER_TORCH_THREADS); not recorded before it was added.")
    checkpoint_id: str | None
    epoch: int | None
    value_range: dict[str, Any] | None = Field(
        None, description="When the data were mapped to the model's range before measuring (diffusers "
        "checkpoints): {data: [lo, hi] as stored, model: [lo, hi] the model takes, scale, shift} with "
        "x_model = scale * x_data + shift (docs/diffusers.md).")
