"""Measure and sample jobs: both start from a stored checkpoint (uploaded or made by training).

- measure: checkpoint -> EntropyMatchingModel -> the same measurement as after training;
- sample: probability-flow ODE samples -> `.npy` (float32, shape (n, ...)) and, for images, a
  `.png` grid, stored as artifacts whose hashes go on the job row.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from app.artifacts import get_artifact_store
from app.db import session_scope
from models.processes import process_from_spec
from worker.inputs import check_fits, load_checkpoint, load_dataset
from worker.jobs import JobContext
from worker.measurements import measure, store_measurement

NPY_MEDIA_TYPE = "application/x-npy"
PNG_MEDIA_TYPE = "image/png"


def run_measure(ctx: JobContext) -> dict[str, Any]:
    """Job body for `type == "measure"`; returns the job columns to set on success."""
    req = ctx.request
    spec = dict(req.get("measurement") or {})
    ctx.reporter.report("loading", fraction=0.0, force=True)
    with session_scope() as session:
        ckpt = load_checkpoint(session, req.get("checkpoint_id") or ctx.input_checkpoint_id,
                               ctx.device)
        loaded = load_dataset(session, req.get("dataset_id") or ctx.dataset_id)
    check_fits(tuple(ckpt.config.event_shape), loaded.data)
    process = ckpt.config.build_process()
    ctx.check_canceled()
    ctx.reporter.report("measuring", fraction=0.1, force=True)
    result = measure(ckpt.model, process, loaded, spec, ctx.device)
    ctx.check_canceled()
    with session_scope() as session:
        row = store_measurement(
            session, result, owner_id=ctx.owner_id, job_id=ctx.job_id, loaded=loaded,
            checkpoint_id=ckpt.checkpoint_id, epoch=ckpt.epoch,
            context={"split": spec.get("split", "test"), "process": process.spec(),
                     "network": ckpt.config.network,
                     "parametrization": ckpt.config.parametrization,
                     "training": (ckpt.config.provenance or {}).get("training"),
                     "device": ctx.device},
        )
        return {"measurement_id": row.id}


def _labels(req: dict[str, Any], n: int, device: str) -> torch.Tensor | None:
    labels = req.get("labels")
    if labels is None:
        return None
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but n = {n}")
    return torch.as_tensor(labels, dtype=torch.long, device=device)


def run_sample(ctx: JobContext) -> dict[str, Any]:
    """Job body for `type == "sample"`; returns the job columns to set on success."""
    from models.sampling import image_grid_png, sample_probability_flow

    req = ctx.request
    n = int(req.get("n", 64))
    ctx.reporter.report("loading", fraction=0.0, force=True)
    with session_scope() as session:
        ckpt = load_checkpoint(session, req.get("checkpoint_id") or ctx.input_checkpoint_id,
                               ctx.device)
    config = ckpt.config
    process = process_from_spec(dict(config.process))
    shape = (n, *tuple(int(d) for d in config.event_shape))
    labels = _labels(req, n, ctx.device)
    generator = torch.Generator(device=ctx.device).manual_seed(int(req.get("seed", 0)))
    ctx.check_canceled()
    ctx.reporter.report("sampling", fraction=0.05, force=True)
    x = sample_probability_flow(
        ckpt.model.score, process, shape, solver=str(req.get("solver", "heun")),
        steps=int(req.get("steps", 100)), generator=generator, labels=labels, device=ctx.device,
    )
    ctx.check_canceled()
    array = x.detach().to("cpu", torch.float32).numpy()
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    png = None
    if len(shape) == 4:
        value_range = tuple(config.value_range) if config.value_range else (-1.0, 1.0)
        png = image_grid_png(x.detach().cpu(), value_range)
    store = get_artifact_store()
    with session_scope() as session:
        npy_sha = store.put_bytes(session, buf.getvalue(), NPY_MEDIA_TYPE)
        png_sha = store.put_bytes(session, png, PNG_MEDIA_TYPE) if png is not None else None
    return {"samples_sha256": npy_sha, "samples_png_sha256": png_sha}
