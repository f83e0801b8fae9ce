"""Rows for worker tests: an owner, a 2-D Gaussian-mixture dataset stored as the API stores it
(canonical .npz in the artifact store), and jobs with fully resolved requests (tiny models)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core.artifacts import get_artifact_store
from core.contract import TrainJobSpec, parse_job_spec
from core.tables import Dataset, Job, Owner
from models.data import GaussianMixture

MIXTURE = {
    "weights": [0.3, 0.7],
    "means": [[-1.5, 0.0], [1.0, 0.5]],
    "stds": [[0.5, 0.6], [0.7, 0.5]],
}
TINY_MLP = {
    "arch": "mlp", "dim": 2, "fourier_features": 8, "fourier_scale": 1.0,
    "time_fourier_scale": 1.0, "width": 16, "hidden_widths": [16], "num_classes": None,
    "event_shape": None, "seed": 0,
}
TINY_MEASUREMENT = {
    "n_times": 8, "n_samples": 1024, "seed": 0, "split": "test", "t_min": 1e-5, "t_max": 1.0,
    "density_bound": False, "data_entropy": False,
}


def make_owner(session: Session, name: str | None = None) -> Owner:
    """An owner; its name (unique, as owner names are) defaults to `tester-<random>`."""
    owner = Owner(name=name or f"tester-{uuid.uuid4().hex[:8]}")
    session.add(owner)
    session.flush()
    return owner


def make_mixture_dataset(
    session: Session, owner: Owner, n: int = 200, test_fraction: float = 0.25, seed: int = 0
) -> Dataset:
    """A mixture dataset row + blob, as `POST /v1/datasets {"kind": "gaussian_mixture"}` makes."""
    mixture = GaussianMixture(MIXTURE["weights"], MIXTURE["means"], MIXTURE["stds"])
    data = mixture.as_dataset(n, seed)
    buf = io.BytesIO()
    np.savez(buf, x=data.x.numpy().astype(np.float32))
    sha = get_artifact_store().put_bytes(session, buf.getvalue(), "application/x-npz")
    train, test = data.split(test_fraction, 0)
    row = Dataset(
        owner_id=owner.id, name="mixture", kind="gaussian_mixture", sha256=sha,
        shape=[n, 2], dtype="float32", is_image=False, value_range=None, num_classes=None,
        split={"test_fraction": test_fraction, "seed": 0, "n_train": len(train),
               "n_test": len(test), "held_out": "split" if test_fraction > 0 else "fresh_draws"},
        mixture={**mixture.to_dict(), "n_samples": n, "seed": seed},
    )
    session.add(row)
    session.flush()
    return row


def train_request(dataset: Dataset, *, epochs: int = 2, milestones: list[int] | None = None,
                  batch_size: int = 50, measurement: dict[str, Any] | None = None,
                  n_train: int | None = None, subset_seed: int = 0,
                  **training: Any) -> dict[str, Any]:
    """A resolved train spec (`core.contract.TrainJobSpec`) as the API stores it."""
    return TrainJobSpec.model_validate({
        "type": "train",
        "dataset_id": dataset.id,
        "data_sha256": dataset.sha256,
        "process": {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0},
        "network": dict(TINY_MLP),
        "training": {"recipe": "paper", "epochs": epochs, "batch_size": batch_size, "lr": 1e-3,
                     "num_steps": 2, "seed": 0, "milestones": milestones or [],
                     "weighting": "unit", "grad_clip": None, "ema_decay": None,
                     "lr_schedule": "constant", "lr_final_fraction": 0.0, "warmup_steps": 0,
                     "log_snr_share": 0.0, "parametrization": "entropy_matching",
                     "stop_when_converged": False,
                     "convergence_tolerance": 0.02, **training},
        "measurement": {**TINY_MEASUREMENT, **(measurement or {})},
        "queue": "cpu",
        "n_train": n_train,
        "subset_seed": subset_seed,
    }).model_dump(mode="json")


def make_job(session: Session, owner: Owner, request: dict[str, Any], **columns: Any) -> Job:
    parse_job_spec(request)  # a test job's request is a valid resolved spec
    job = Job(
        owner_id=owner.id, type=request["type"], queue="cpu", request=request,
        dataset_id=request.get("dataset_id"), input_checkpoint_id=request.get("checkpoint_id"),
        **columns,
    )
    session.add(job)
    session.flush()
    return job
