"""Measuring a model (S_NN curve and total; S_tot, density bound, data entropy when asked/known)
and storing the result: a `Measurement` row (summary + reproducibility) and its `CurvePoint` rows.

Summary document (the contract): {"neural_entropy": {nats, bits, bits_per_dim, stderr},
"total_entropy": {nats, stderr} | null, "density_bound": {nats, bits_per_dim, stderr, ...} | null,
"data_entropy": {nats, stderr} | null, "t_min", "t_max", "n_evaluations", "dim"}.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from app.settings import code_version, get_settings
from app.tables import CurvePoint, Measurement
from models.data import DataSet
from models.processes import ForwardProcess
from worker.inputs import LoadedDataset

LN2 = math.log(2.0)
FRESH_POOL_MIN = 10_000  # fresh mixture draws for a held-out measurement (MATH.md 3, "Which x0")


@dataclass
class MeasurementResult:
    """What a measurement produced, ready to store."""

    summary: dict[str, Any]
    estimator: dict[str, Any]
    curve: dict[str, list[float | None]]  # s, rate, rate_stderr, cumulative(_stderr), total_*


def _f(x: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf/None)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _column(curve: Any, name: str) -> list[float | None] | None:
    values = getattr(curve, name, None)
    if values is None:
        return None
    return [_f(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def measurement_config(spec: dict[str, Any]) -> Any:
    """`models.entropy.estimators.MeasurementConfig` from the request's measurement section."""
    from models.entropy.estimators import MeasurementConfig

    known = {f.name for f in dataclasses.fields(MeasurementConfig)}
    args = {k: v for k, v in spec.items() if k in known and v is not None}
    return MeasurementConfig(**args)


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return dataclasses.asdict(config)


def measurement_pool(loaded: LoadedDataset, split: str, seed: int) -> DataSet:
    """The x0 pool: fresh draws for a mixture's held-out measurement when the dataset kept no
    held-out split (`split.held_out == "fresh_draws"`), else that part of the dataset."""
    fresh = loaded.split.get("held_out") == "fresh_draws" or len(loaded.test) == 0
    if split == "test" and loaded.mixture is not None and fresh:
        n = min(max(len(loaded.data), FRESH_POOL_MIN), get_settings().max_n_samples)
        generator = torch.Generator().manual_seed(int(seed) + 1_000_003)
        x = loaded.mixture.sample(n, generator)
        assert isinstance(x, torch.Tensor)
        return DataSet(x)
    return loaded.part(split)


def measure(
    model: Any,
    process: ForwardProcess,
    loaded: LoadedDataset,
    spec: dict[str, Any],
    device: str,
) -> MeasurementResult:
    """Run the measurement `spec` (the request's "measurement" section) of `model` on `loaded`."""
    from models.entropy import estimators

    config = measurement_config(spec)
    split = str(spec.get("split", "test"))
    pool = measurement_pool(loaded, split, int(spec.get("seed", 0)))
    labels = pool.labels
    result = estimators.neural_entropy(
        model.e_theta, process, pool.x, config, labels=labels, device=device
    )
    dim = int(result.dim)
    nats, stderr = float(result.total.mean), float(result.total.stderr)
    summary: dict[str, Any] = {
        "neural_entropy": {
            "nats": nats,
            "bits": nats / LN2,
            "bits_per_dim": nats / LN2 / dim,
            "stderr": stderr,
            "stderr_bits": stderr / LN2,
        },
        "total_entropy": None,
        "density_bound": None,
        "data_entropy": None,
        "t_min": _f(result.t_start),
        "t_max": _f(result.t_end),
        "n_evaluations": int(result.n_evaluations),
        "dim": dim,
        "n_pool": len(pool),
    }
    curve = {
        name: _column(result.curve, name) or []
        for name in ("s", "rate", "rate_stderr", "cumulative", "cumulative_stderr")
    }
    if loaded.mixture is not None:
        total = estimators.total_entropy_mixture(loaded.mixture, process, config, device=device)
        summary["total_entropy"] = {
            "nats": float(total.total.mean),
            "stderr": float(total.total.stderr),
            "bits": float(total.total.mean) / LN2,
        }
        if len(_column(total.curve, "s") or []) == len(curve["s"]):
            curve["total_rate"] = _column(total.curve, "rate") or []
            curve["total_rate_stderr"] = _column(total.curve, "rate_stderr") or []
            curve["total_cumulative"] = _column(total.curve, "cumulative") or []
    if spec.get("density_bound"):
        flat = pool.x.reshape(len(pool), -1)
        bound = estimators.density_bound(
            model.score, process, pool.x, config, labels=labels,
            data_variance=(float(flat.var(dim=0).mean())
                           if process.equilibrium_variance() is None else None),
            value_range=loaded.eight_bit_range, device=device,
        )
        summary["density_bound"] = {
            "nats": float(bound.nats.mean), "stderr": float(bound.nats.stderr),
            "bits_per_dim": float(bound.bits_per_dim.mean),
            "bits_per_dim_stderr": float(bound.bits_per_dim.stderr),
            "prior_nats": float(bound.prior_nats),
            "offset_bits_per_dim": float(bound.offset_bits_per_dim),
        }
    if spec.get("data_entropy"):
        ent = estimators.data_entropy(result, process, pool.x)
        summary["data_entropy"] = {"nats": float(ent.mean), "stderr": float(ent.stderr)}
    return MeasurementResult(summary, _config_dict(config), curve)


def store_measurement(
    session: Session,
    result: MeasurementResult,
    *,
    owner_id: str,
    job_id: str | None,
    loaded: LoadedDataset,
    checkpoint_id: str | None,
    epoch: int | None,
    context: dict[str, Any],
) -> Measurement:
    """Add the Measurement row and its curve rows; `context`: process, network, training, device."""
    spec_seed = result.estimator.get("seed")
    reproducibility = {
        "data_sha256": loaded.sha256,
        "dataset_id": loaded.dataset_id,
        "split": context.get("split"),
        "process": context.get("process"),
        "network": context.get("network"),
        "parametrization": context.get("parametrization", "entropy_matching"),
        "training": context.get("training"),
        "estimator": result.estimator,
        "seed": spec_seed,
        "device": context.get("device"),
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "checkpoint_id": checkpoint_id,
        "epoch": epoch,
    }
    row = Measurement(
        owner_id=owner_id,
        job_id=job_id,
        dataset_id=loaded.dataset_id,
        checkpoint_id=checkpoint_id,
        epoch=epoch,
        summary=result.summary,
        reproducibility=reproducibility,
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
