"""Measuring a model (S_NN curve and total; S_tot, density bound, data entropy when asked/known)
and storing the result: a `Measurement` row (a `core.contract.MeasurementSummary` and a
`Reproducibility` record) and its `CurvePoint` rows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from core.contract import (
    DataEntropySummary,
    DensityBoundSummary,
    GeneralizationSummary,
    MeasurementSummary,
    NeuralEntropySummary,
    Reproducibility,
    ResolvedMeasurement,
    Split,
    TotalEntropySummary,
)
from core.settings import code_version, get_settings
from core.tables import CurvePoint, Measurement
from models.data import DataSet
from models.entropy import estimators
from models.entropy.estimators import EntropyCurve, EntropyResult, MeasurementConfig
from models.parametrization import EntropyMatchingModel
from models.processes import ForwardProcess
from worker.inputs import LoadedDataset
from worker.progress import finite_or_none

FRESH_POOL_MIN = 10_000  # fresh mixture draws for a held-out measurement (docs/math.md §3.2)
CURVE_COLUMNS = ("s", "rate", "rate_stderr", "cumulative", "cumulative_stderr")


@dataclass(frozen=True)
class MeasurementContext:
    """What was measured, for the reproducibility record."""

    split: Split
    process: dict[str, Any]
    network: dict[str, Any] | None
    training: dict[str, Any] | None
    device: str
    parametrization: str  # entropy_matching | scaled_entropy_matching | score | noise | v_prediction | sample
    value_range: dict[str, Any] | None = None  # the data -> model range map, when one was applied


@dataclass
class MeasurementResult:
    """What a measurement produced, ready to store."""

    summary: MeasurementSummary
    estimator: dict[str, Any]  # the MeasurementConfig used, every field
    curve: dict[str, list[float | None]]  # s, rate, rate_stderr, cumulative(_stderr), total_*


def _column(curve: EntropyCurve, name: str) -> list[float | None]:
    values = getattr(curve, name)
    return [finite_or_none(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def measurement_config(spec: ResolvedMeasurement) -> MeasurementConfig:
    """The estimator's settings for the job's resolved measurement section."""
    return MeasurementConfig(n_times=spec.n_times, n_samples=spec.n_samples, seed=spec.seed,
                             t_min=spec.t_min, t_max=spec.t_max)


def neural_entropy_summary(result: EntropyResult) -> NeuralEntropySummary:
    bits = result.bits()
    return NeuralEntropySummary(nats=result.total.mean, bits=bits.mean,
                                bits_per_dim=result.bits_per_dim().mean,
                                stderr=result.total.stderr, stderr_bits=bits.stderr)


def generalization_summary(model: EntropyMatchingModel, process: ForwardProcess, train: DataSet,
                           held_out: EntropyResult, config: MeasurementConfig,
                           device: str) -> GeneralizationSummary:
    """S_NN on the training points (independent draws: the next seed) and its gap to `held_out`."""
    on_train = estimators.neural_entropy(
        model.e_theta, process, train.x, dataclasses.replace(config, seed=config.seed + 1),
        labels=train.labels, device=device)
    gap = on_train.total.mean - held_out.total.mean
    return GeneralizationSummary(
        train=neural_entropy_summary(on_train), gap_nats=gap,
        gap_stderr=math.hypot(on_train.total.stderr, held_out.total.stderr),
        relative_gap=gap / held_out.total.mean if held_out.total.mean else None)


def measurement_pool(loaded: LoadedDataset, split: Split, seed: int) -> DataSet:
    """The x0 pool: fresh draws for a mixture's held-out measurement when the dataset kept no
    held-out split (`split.held_out == "fresh_draws"`), else that part of the dataset."""
    fresh = loaded.split.held_out == "fresh_draws" or len(loaded.test) == 0
    if split in ("test", "both") and loaded.mixture is not None and fresh:
        n = min(max(len(loaded.data), FRESH_POOL_MIN), get_settings().max_n_samples)
        generator = torch.Generator().manual_seed(int(seed) + 1_000_003)
        x = loaded.mixture.sample(n, generator)
        assert isinstance(x, torch.Tensor)
        return DataSet(x)
    return loaded.part("test" if split == "both" else split)


def measure(
    model: EntropyMatchingModel,
    process: ForwardProcess,
    loaded: LoadedDataset,
    spec: ResolvedMeasurement,
    device: str,
) -> MeasurementResult:
    """Run the measurement `spec` (the job's measurement section) of `model` on `loaded`."""
    config = measurement_config(spec)
    pool = measurement_pool(loaded, spec.split, spec.seed)
    labels = pool.labels
    result = estimators.neural_entropy(
        model.e_theta, process, pool.x, config, labels=labels, device=device
    )
    curve = {name: _column(result.curve, name) for name in CURVE_COLUMNS}
    total_entropy = None
    if loaded.mixture is not None:
        total = estimators.total_entropy_mixture(loaded.mixture, process, config, device=device)
        total_entropy = TotalEntropySummary(nats=total.total.mean, bits=total.bits().mean,
                                            stderr=total.total.stderr)
        if len(total.curve.s) == len(result.curve.s):
            curve["total_rate"] = _column(total.curve, "rate")
            curve["total_rate_stderr"] = _column(total.curve, "rate_stderr")
            curve["total_cumulative"] = _column(total.curve, "cumulative")
    density_bound = None
    if spec.density_bound:
        flat = pool.x.reshape(len(pool), -1)
        bound = estimators.density_bound(
            model.score, process, pool.x, config, labels=labels,
            data_variance=(float(flat.var(dim=0).mean())
                           if process.equilibrium_variance() is None else None),
            value_range=loaded.eight_bit_range, device=device,
        )
        density_bound = DensityBoundSummary(
            nats=bound.nats.mean, stderr=bound.nats.stderr,
            bits_per_dim=bound.bits_per_dim.mean, bits_per_dim_stderr=bound.bits_per_dim.stderr,
            prior_nats=bound.prior_nats, offset_bits_per_dim=bound.offset_bits_per_dim)
    data_entropy = None
    if spec.data_entropy:
        ent = estimators.data_entropy(result, process, pool.x)
        data_entropy = DataEntropySummary(nats=ent.mean, stderr=ent.stderr)
    generalization = None
    if spec.split == "both":
        generalization = generalization_summary(model, process, loaded.train, result, config,
                                                device)
    summary = MeasurementSummary(
        neural_entropy=neural_entropy_summary(result), total_entropy=total_entropy,
        density_bound=density_bound, data_entropy=data_entropy, generalization=generalization,
        t_min=finite_or_none(result.t_start), t_max=finite_or_none(result.t_end),
        n_evaluations=result.n_evaluations, dim=result.dim, n_pool=len(pool))
    return MeasurementResult(summary, config.to_dict(), curve)


def store_measurement(
    session: Session,
    result: MeasurementResult,
    *,
    owner_id: str,
    job_id: str | None,
    loaded: LoadedDataset,
    checkpoint_id: str | None,
    epoch: int | None,
    context: MeasurementContext,
) -> Measurement:
    """Add the Measurement row and its curve rows."""
    reproducibility = Reproducibility(
        data_sha256=loaded.sha256,
        dataset_id=loaded.dataset_id,
        split=context.split,
        process=context.process,
        network=context.network,
        parametrization=context.parametrization,
        training=context.training,
        estimator=result.estimator,
        seed=result.estimator["seed"],
        device=context.device,
        code_version=code_version(),
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        value_range=context.value_range,
        checkpoint_id=checkpoint_id,
        epoch=epoch,
    )
    row = Measurement(
        owner_id=owner_id,
        job_id=job_id,
        dataset_id=loaded.dataset_id,
        checkpoint_id=checkpoint_id,
        epoch=epoch,
        summary=result.summary.model_dump(mode="json"),
        reproducibility=reproducibility.model_dump(mode="json"),
    )
    session.add(row)
    session.flush()
    c = result.curve
    n = len(c["s"])

    def col(name: str, i: int) -> float | None:
        values = c.get(name) or []
        return values[i] if i < len(values) else None

    session.add_all(
        CurvePoint(
            measurement_id=row.id,
            idx=i,
            s=c["s"][i],
            rate=col("rate", i) or 0.0,
            rate_stderr=col("rate_stderr", i) or 0.0,
            cumulative=col("cumulative", i) or 0.0,
            cumulative_stderr=col("cumulative_stderr", i),
            total_rate=col("total_rate", i),
            total_rate_stderr=col("total_rate_stderr", i),
            total_cumulative=col("total_cumulative", i),
        )
        for i in range(n)
    )
    session.flush()
    return row
