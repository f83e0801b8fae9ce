"""The measure job: a stored checkpoint (uploaded or made by training) -> EntropyMatchingModel ->
the same measurement as after training, on the job's dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from core.contract import MeasureJobSpec
from core.db import session_scope
from models.pipelines.config import ARCH as DIFFUSERS_ARCH
from worker.context import JobContext
from worker.inputs import check_fits, load_checkpoint, load_dataset, to_model_range
from worker.measurements import MeasurementContext, measure, store_measurement


def run_measure(ctx: JobContext) -> Callable[[Session], dict[str, Any]]:
    """Job body for `type == "measure"`; returns the commit of its measurement (`worker.jobs`
    runs it in the transaction of the final status)."""
    spec = ctx.spec
    assert isinstance(spec, MeasureJobSpec)
    ctx.reporter.report("loading", fraction=0.0, force=True)
    with session_scope() as session:
        ckpt = load_checkpoint(session, spec.checkpoint_id, ctx.device)
        loaded = load_dataset(session, spec.dataset_id)
    check_fits(tuple(ckpt.config.event_shape), loaded.data)
    value_map = None
    if ckpt.config.network.get("arch") == DIFFUSERS_ARCH and ckpt.config.value_range is not None:
        loaded, value_map = to_model_range(loaded, ckpt.config.value_range)  # docs/diffusers.md
    process = ckpt.config.build_process()
    ctx.check_canceled()
    ctx.reporter.report("measuring", fraction=0.1, force=True)
    result = measure(ckpt.model, process, loaded, spec.measurement, ctx.device)
    ctx.check_canceled()
    context = MeasurementContext(
        split=spec.measurement.split, process=process.spec(), network=ckpt.config.network,
        training=(ckpt.config.provenance or {}).get("training"), device=ctx.device,
        parametrization=ckpt.config.parametrization, value_range=value_map)

    def commit(session: Session) -> dict[str, Any]:
        row = store_measurement(session, result, owner_id=ctx.owner_id, job_id=ctx.job_id,
                                loaded=loaded, checkpoint_id=ckpt.checkpoint_id, epoch=ckpt.epoch,
                                context=context)
        return {"measurement_id": row.id}

    return commit
