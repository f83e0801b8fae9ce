"""Resolving job requests: fill in every default, check consistency, apply the limits.

The result is a resolved spec of `core.contract` (`TrainJobSpec`, `MeasureJobSpec`,
`SampleJobSpec`), stored in `Job.request` and read by the worker.

Inconsistent settings get 422 naming the field (e.g. `training.milestones`); values over a cap
get 422 naming the cap (e.g. MAX_EPOCHS). Nothing is trained or measured here, and CUDA is never
touched (configs are checked as dataclasses; a network is built only on PyTorch's `meta`
device, which allocates nothing, to count its parameters).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from app.errors import over_limit, unprocessable
from app.schemas.jobs import MeasureJobCreate, SampleJobCreate, TrainFields
from app.services.checkpoints import get_owned as get_checkpoint
from app.services.datasets import get_owned as get_dataset
from app.services.network_limits import check_network_size, check_override_types
from core.contract import (
    NUM_STEPS_IMAGES,
    NUM_STEPS_VECTORS,
    MeasureJobSpec,
    MeasurementSpec,
    NetworkSpec,
    QueueName,
    ResolvedMeasurement,
    ResolvedTraining,
    SampleJobSpec,
    TrainJobSpec,
)
from core.settings import Settings
from core.tables import Checkpoint, Dataset, Owner
from models.data import is_eight_bit
from models.entropy.estimators import MeasurementConfig
from models.networks import MLPConfig, default_network_config, network_config_from_dict
from models.pipelines.config import ARCH as DIFFUSERS_ARCH
from models.processes import ForwardProcess, process_from_spec

ResolvedSpec = TrainJobSpec | MeasureJobSpec | SampleJobSpec


def default_measurement_samples() -> int:
    """The estimator's own default `n_samples` (models.entropy.estimators.MeasurementConfig)."""
    return MeasurementConfig().n_samples


def build_process(spec: dict[str, Any], field: str = "process") -> ForwardProcess:
    try:
        return process_from_spec(spec)
    except ValueError as exc:
        raise unprocessable(f"invalid process: {exc}", field) from None


def event_shape_of(row: Dataset) -> tuple[int, ...]:
    return tuple(int(d) for d in row.shape[1:])


# ---- measurement ----
def resolve_measurement(spec: MeasurementSpec, process: ForwardProcess, dataset: Dataset,
                        settings: Settings) -> ResolvedMeasurement:
    if spec.n_times > settings.max_curve_points:
        raise over_limit("measurement.n_times", spec.n_times, settings.max_curve_points,
                         "max_curve_points")
    n_samples = spec.n_samples if spec.n_samples is not None else default_measurement_samples()
    if n_samples > settings.max_n_samples:
        raise over_limit("measurement.n_samples", n_samples, settings.max_n_samples,
                         "max_n_samples")
    try:
        MeasurementConfig(n_times=spec.n_times, n_samples=n_samples, seed=spec.seed)
    except ValueError as exc:
        field = "measurement.n_samples" if "n_samples" in str(exc) else "measurement.n_times"
        raise unprocessable(str(exc), field) from None
    t_min = process.t_min if spec.t_min is None else spec.t_min
    t_max = process.t_max if spec.t_max is None else spec.t_max
    if not process.t_min <= t_min:
        raise unprocessable(f"t_min = {t_min:g} is below the start {process.t_min:g} of process "
                            f"{process.kind!r}", "measurement.t_min")
    if not t_max <= process.t_max:
        raise unprocessable(f"t_max = {t_max:g} is beyond the end {process.t_max:g} of process "
                            f"{process.kind!r}", "measurement.t_max")
    if not t_min < t_max:
        raise unprocessable(f"t_min ({t_min:g}) must be below t_max ({t_max:g})",
                            "measurement.t_min")
    split = dataset.split or {}
    if spec.split == "test" and split.get("held_out") != "fresh_draws" \
            and int(split.get("n_test", 1)) == 0:
        raise unprocessable(
            f"dataset {dataset.id} has no held-out points (test_fraction 0); measure on "
            "split 'train' or upload it with test_fraction > 0", "measurement.split")
    return ResolvedMeasurement(n_times=spec.n_times, n_samples=n_samples, seed=spec.seed,
                               split=spec.split, t_min=t_min, t_max=t_max,
                               density_bound=spec.density_bound, data_entropy=spec.data_entropy)


# ---- network ----
def resolve_network(spec: NetworkSpec, event_shape: tuple[int, ...], num_classes: int | None,
                    seed: int, settings: Settings | None = None) -> dict[str, Any]:
    """Defaults for the data's shape, overridden by the request's keys; checked against the data
    and (with `settings`) against MAX_NETWORK_LAYERS and MAX_NETWORK_PARAMETERS."""
    overrides = dict(spec.model_extra or {})
    arch = spec.arch
    try:
        base = default_network_config(event_shape, None, seed).to_dict()
    except ValueError as exc:
        if arch != "mlp":
            raise unprocessable(f"no default network for this data: {exc}; give "
                                "network.arch = 'mlp'", "network.arch") from None
        base = {"arch": "mlp"}
    if arch is not None and arch != base["arch"]:
        if arch == "mlp":
            base = MLPConfig(dim=math.prod(event_shape), event_shape=event_shape,
                             seed=seed).to_dict()
        else:
            raise unprocessable(f"a {arch!r} network needs images (C, H, W); the data's samples "
                                f"have shape {list(event_shape)}", "network.arch")
    if arch == "mlp" and len(event_shape) > 1:
        base.setdefault("event_shape", list(event_shape))
    check_override_types(overrides, base)
    doc = {**base, **overrides}
    try:
        config = network_config_from_dict(doc)
    except ValueError as exc:
        msg = str(exc)
        bad = next((k for k in overrides if repr(k) in msg or k in msg), None)
        raise unprocessable(f"invalid network: {msg}", f"network.{bad}" if bad else "network") \
            from None
    shape = tuple(int(d) for d in config.shape)
    if math.prod(shape) != math.prod(event_shape):
        field = "network.dim" if "dim" in doc else "network"
        raise unprocessable(f"the network takes samples of shape {list(shape)} "
                            f"({math.prod(shape)} numbers) but the data's have shape "
                            f"{list(event_shape)} ({math.prod(event_shape)})", field)
    if len(shape) > 1 and shape != event_shape:
        raise unprocessable(f"the network takes samples of shape {list(shape)} but the data's "
                            f"have shape {list(event_shape)}", "network")
    nc = config.num_classes
    if nc is not None and num_classes is None:
        raise unprocessable("a class-conditional network (num_classes set) needs a dataset with "
                            "labels", "network.num_classes")
    if nc is not None and num_classes is not None and nc < num_classes:
        raise unprocessable(f"network.num_classes = {nc} but the labels need {num_classes}",
                            "network.num_classes")
    if settings is not None:
        check_network_size(config, settings)
    return config.to_dict()


# ---- training ----
def training_points(dataset: Dataset) -> int:
    """Points in the dataset's training split."""
    return int((dataset.split or {}).get("n_train", dataset.shape[0]))


def resolve_n_train(req: TrainFields, dataset: Dataset) -> int | None:
    """The nested subset's size: at most the training points, at least one batch."""
    if req.n_train is None:
        return None
    available = training_points(dataset)
    if req.n_train > available:
        raise unprocessable(f"n_train = {req.n_train} exceeds the {available} training points of "
                            f"dataset {dataset.id}", "n_train")
    batch_size = req.training.recipe_fields()["batch_size"]
    if req.n_train < batch_size:
        raise unprocessable(f"n_train = {req.n_train} is smaller than one batch "
                            f"(training.batch_size = {batch_size})", "n_train")
    return req.n_train


def resolve_training(req: TrainFields, dataset: Dataset, settings: Settings
                     ) -> ResolvedTraining:
    spec = req.training
    recipe = spec.recipe_fields()
    if spec.epochs > settings.max_epochs:
        raise over_limit("training.epochs", spec.epochs, settings.max_epochs, "max_epochs")
    bad = [m for m in spec.milestones if not 1 <= m <= spec.epochs]
    if bad:
        raise unprocessable(f"milestones {bad} lie outside 1..epochs ({spec.epochs})",
                            "training.milestones")
    if len(set(spec.milestones)) != len(spec.milestones):
        raise unprocessable("milestones must not repeat", "training.milestones")
    n_train = training_points(dataset)
    if recipe["batch_size"] > n_train:
        raise unprocessable(f"batch_size {recipe['batch_size']} exceeds the {n_train} training "
                            f"points of dataset {dataset.id}", "training.batch_size")
    num_steps = spec.num_steps
    if num_steps is None:
        num_steps = NUM_STEPS_IMAGES if dataset.is_image else NUM_STEPS_VECTORS
    return ResolvedTraining(recipe=spec.recipe, epochs=spec.epochs, num_steps=num_steps,
                            seed=spec.seed, milestones=sorted(spec.milestones),
                            stop_when_converged=spec.stop_when_converged,
                            convergence_tolerance=spec.convergence_tolerance,
                            **recipe)


# ---- whole requests ----
def resolve_train(session: Session, owner: Owner, req: TrainFields, settings: Settings,
                  queue: QueueName) -> tuple[TrainJobSpec, Dataset]:
    dataset = get_dataset(session, owner, req.dataset_id, "dataset_id")
    process = build_process(req.process.model_dump())
    n_train = resolve_n_train(req, dataset)
    training = resolve_training(req, dataset, settings)
    network = resolve_network(req.network, event_shape_of(dataset), dataset.num_classes,
                              training.seed, settings)
    measurement = resolve_measurement(req.measurement, process, dataset, settings)
    spec = TrainJobSpec(type="train", dataset_id=dataset.id, data_sha256=dataset.sha256,
                        process=process.spec(),  # type: ignore[arg-type]  # validated by pydantic
                        network=network, training=training, measurement=measurement, queue=queue,
                        n_train=n_train, subset_seed=req.subset_seed)
    return spec, dataset


def resolve_measure(session: Session, owner: Owner, req: MeasureJobCreate, settings: Settings,
                    queue: QueueName) -> tuple[MeasureJobSpec, Dataset, Checkpoint]:
    checkpoint = get_checkpoint(session, owner, req.checkpoint_id, "checkpoint_id")
    dataset = get_dataset(session, owner, req.dataset_id, "dataset_id")
    config = checkpoint.config or {}
    want = tuple(int(d) for d in config.get("event_shape") or ())
    have = event_shape_of(dataset)
    diffusers = (config.get("network") or {}).get("arch") == DIFFUSERS_ARCH
    if want and want != have:
        what = (f" (a diffusers UNet2DModel with in_channels {want[0]} and sample_size "
                f"{want[1] if want[1] == want[2] else list(want[1:])})" if diffusers and len(want) == 3 else "")
        raise unprocessable(f"dataset {dataset.id} has samples of shape {list(have)} but "
                            f"checkpoint {checkpoint.id} takes {list(want)}{what}", "dataset_id")
    if diffusers and config.get("value_range") and not dataset.value_range and not is_eight_bit(dataset.source_dtype):
        raise unprocessable(f"dataset {dataset.id} records no value range, so it cannot be mapped to the "
                            f"diffusers model's range {config['value_range']}; upload it with "
                            "value_min/value_max", "dataset_id")
    if config.get("num_classes") and dataset.num_classes is None:
        raise unprocessable(f"checkpoint {checkpoint.id} is class-conditional but dataset "
                            f"{dataset.id} has no labels", "dataset_id")
    process = build_process(config["process"], "checkpoint_id")
    measurement = resolve_measurement(req.measurement, process, dataset, settings)
    spec = MeasureJobSpec(type="measure", checkpoint_id=checkpoint.id, dataset_id=dataset.id,
                          data_sha256=dataset.sha256,
                          process=process.spec(),  # type: ignore[arg-type]  # validated by pydantic
                          measurement=measurement, queue=queue)
    return spec, dataset, checkpoint


def resolve_sample(session: Session, owner: Owner, req: SampleJobCreate, settings: Settings,
                   queue: QueueName) -> tuple[SampleJobSpec, Checkpoint]:
    checkpoint = get_checkpoint(session, owner, req.checkpoint_id, "checkpoint_id")
    if req.n > settings.max_sample_count:
        raise over_limit("n", req.n, settings.max_sample_count, "max_sample_count")
    num_classes = (checkpoint.config or {}).get("num_classes")
    labels = req.labels
    if labels is not None:
        if not num_classes:
            raise unprocessable("labels given for an unconditional checkpoint", "labels")
        if len(labels) != req.n:
            raise unprocessable(f"labels has {len(labels)} entries; n = {req.n}", "labels")
        if any(not 0 <= lab < num_classes for lab in labels):
            raise unprocessable(f"labels must lie in 0..{num_classes - 1}", "labels")
    elif num_classes:
        labels = [i % int(num_classes) for i in range(req.n)]  # classes in turn
    spec = SampleJobSpec(type="sample", checkpoint_id=checkpoint.id, n=req.n, seed=req.seed,
                         solver=req.solver, steps=req.steps, labels=labels, queue=queue)
    return spec, checkpoint
