"""The sample job: probability-flow ODE samples from a stored checkpoint -> `.npy` (float32,
shape (n, ...)) and, for images, a `.png` grid, stored as artifacts whose hashes go on the job row.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from core.artifacts import get_artifact_store
from core.contract import SampleJobSpec
from core.db import session_scope
from models.sampling import image_grid_png, sample_probability_flow
from worker.context import JobContext
from worker.inputs import load_checkpoint

NPY_MEDIA_TYPE = "application/x-npy"
PNG_MEDIA_TYPE = "image/png"


def run_sample(ctx: JobContext) -> Callable[[Session], dict[str, Any]]:
    """Job body for `type == "sample"`; returns the commit of its blobs (`worker.jobs` runs it in
    the transaction of the final status)."""
    spec = ctx.spec
    assert isinstance(spec, SampleJobSpec)
    ctx.reporter.report("loading", fraction=0.0, force=True)
    with session_scope() as session:
        ckpt = load_checkpoint(session, spec.checkpoint_id, ctx.device)
    config = ckpt.config
    process = config.build_process()
    shape = (spec.n, *tuple(int(d) for d in config.event_shape))
    labels = None if spec.labels is None else torch.as_tensor(spec.labels, dtype=torch.long,
                                                              device=ctx.device)
    generator = torch.Generator(device=ctx.device).manual_seed(spec.seed)
    ctx.check_canceled()
    ctx.reporter.report("sampling", fraction=0.05, force=True)
    x = sample_probability_flow(
        ckpt.model.score, process, shape, solver=spec.solver, steps=spec.steps,
        generator=generator, labels=labels, device=ctx.device,
    )
    ctx.check_canceled()
    array = x.detach().to("cpu", torch.float32).numpy()
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    png = None
    if len(shape) == 4:
        png = image_grid_png(x.detach().cpu(), config.value_range or (-1.0, 1.0))
    store = get_artifact_store()

    def commit(session: Session) -> dict[str, Any]:
        npy_sha = store.put_bytes(session, buf.getvalue(), NPY_MEDIA_TYPE)
        png_sha = store.put_bytes(session, png, PNG_MEDIA_TYPE) if png is not None else None
        return {"samples_sha256": npy_sha, "samples_png_sha256": png_sha}

    return commit
