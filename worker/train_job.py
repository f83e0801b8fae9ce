"""The train job: entropy-matching training with milestones, then the final checkpoint and
measurement.

At each milestone epoch: the training state is saved (for resuming after a crash), the network is
written as a checkpoint and measured, and a `JobMilestone` row links the two. At the end the final
checkpoint and measurement become the job's `checkpoint_id` / `measurement_id` (reusing the last
milestone's when it is the final epoch). Heavy work happens outside DB transactions so SQLite's
single writer is never held for long.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from sqlalchemy import select

from app.db import session_scope
from app.settings import code_version
from app.tables import JobMilestone
from models.processes import ForwardProcess, process_from_spec
from models.training.state import TrainingStateError
from worker.checkpoints import checkpoint_config, store_checkpoint
from worker.errors import JobCanceled
from worker.inputs import LoadedDataset, check_fits, load_dataset
from worker.jobs import JobContext
from worker.measurements import measure, store_measurement
from worker.progress import TRAINING_SHARE, TrainingClock
from worker.resume import load_training_state, save_training_state

STATE_SAVES_PER_RUN = 10  # training state saved about this often (for resuming after a crash)

log = logging.getLogger(__name__)


def _training_api() -> Any:
    import models.training as training

    return training


def build_network(config: Any) -> torch.nn.Module:
    from models.networks import build_network as build

    return build(config)


def network_config(request: dict[str, Any], loaded: LoadedDataset) -> Any:
    """The resolved network config of the request (defaults for the data's shape under it)."""
    from models.networks import default_network_config, network_config_from_dict

    given = dict(request.get("network") or {})
    base = default_network_config(loaded.data.event_shape, loaded.data.num_classes).to_dict()
    if given.get("arch", base["arch"]) != base["arch"]:
        return network_config_from_dict(given)
    return network_config_from_dict({**base, **given})


def _existing_milestones(job_id: str) -> dict[int, JobMilestone]:
    with session_scope() as session:
        rows = session.scalars(select(JobMilestone).where(JobMilestone.job_id == job_id)).all()
        for row in rows:
            session.expunge(row)
    return {row.epoch: row for row in rows}


class TrainRun:
    """One run of a train job (a resumed run continues from the last milestone's state)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        req = ctx.request
        self.process: ForwardProcess = process_from_spec(req.get("process") or {"kind": "vp"})
        self.measurement_spec: dict[str, Any] = dict(req.get("measurement") or {})
        self.training_spec: dict[str, Any] = dict(req.get("training") or {})
        with session_scope() as session:
            self.loaded = load_dataset(session, ctx.dataset_id)
        self.net_config = network_config(req, self.loaded)
        self.net_dict: dict[str, Any] = self.net_config.to_dict()
        shape = getattr(self.net_config, "shape", None)
        if shape is not None:
            check_fits(tuple(shape), self.loaded.data)
        self.milestones = _existing_milestones(ctx.job_id)
        self.clock: TrainingClock | None = None
        self.start_epoch = 0  # completed epochs when this run started (resumed runs: > 0)

    # ---- callbacks given to models.training.train ----
    def on_progress(self, event: Any) -> None:
        epochs = int(event.epochs)
        if self.clock is None:
            self.clock = TrainingClock(epochs, int(event.steps_per_epoch),
                                       start_epoch=self.start_epoch)
        done = self.clock.steps_done(int(event.epoch), int(event.step))
        self.ctx.reporter.report(
            "training", epoch=int(event.epoch), epochs=epochs, loss=float(event.loss),
            fraction=self.clock.fraction(done), eta_seconds=self.clock.eta_seconds(done),
        )

    def should_stop(self) -> bool:
        return self.ctx.reporter.cancel_requested()

    def on_checkpoint(self, state: Any) -> None:
        save_training_state(self.ctx.job_id, state)

    def on_milestone(self, epoch: int, network: torch.nn.Module, state: Any = None) -> None:
        epoch = int(epoch)
        if epoch in self.milestones:
            return  # recorded by an earlier run of this job (we resumed past it)
        ckpt_id, meas_id = self.checkpoint_and_measure(network, epoch, phase="milestone")
        with session_scope() as session:
            session.add(JobMilestone(job_id=self.ctx.job_id, epoch=epoch,
                                     measurement_id=meas_id, checkpoint_id=ckpt_id))
        self.milestones[epoch] = JobMilestone(epoch=epoch, measurement_id=meas_id,
                                              checkpoint_id=ckpt_id)

    # ---- checkpoint + measurement ----
    def checkpoint_and_measure(self, network: torch.nn.Module, epoch: int,
                               phase: str) -> tuple[str, str]:
        from models.parametrization import EntropyMatchingModel

        ctx = self.ctx
        ctx.check_canceled()
        progress = ctx.reporter.current or {}
        ctx.reporter.report("measuring" if phase == "final" else "milestone", epoch=epoch,
                            epochs=progress.get("epochs"), loss=progress.get("loss"),
                            fraction=progress.get("fraction"),
                            eta_seconds=progress.get("eta_seconds"))
        model = EntropyMatchingModel(network, self.process).eval()
        result = measure(model, self.process, self.loaded, self.measurement_spec, ctx.device)
        data = self.loaded.data
        config = checkpoint_config(
            network=self.net_dict, process=self.process.spec(), event_shape=data.event_shape,
            value_range=data.value_range, num_classes=getattr(self.net_config, "num_classes", None),
            provenance={"source": "training", "job_id": ctx.job_id, "epoch": epoch,
                        "dataset_id": self.loaded.dataset_id,
                        "dataset_sha256": self.loaded.sha256, "training": self.training_spec,
                        "code_version": code_version()},
        )
        with session_scope() as session:
            ckpt = store_checkpoint(session, network, config, owner_id=ctx.owner_id,
                                    job_id=ctx.job_id, epoch=epoch)
            meas = store_measurement(
                session, result, owner_id=ctx.owner_id, job_id=ctx.job_id, loaded=self.loaded,
                checkpoint_id=ckpt.id, epoch=epoch,
                context={"split": self.measurement_spec.get("split", "test"),
                         "process": self.process.spec(), "network": self.net_dict,
                         "training": self.training_spec, "device": ctx.device},
            )
            return ckpt.id, meas.id

    # ---- the run ----
    def run(self) -> dict[str, Any]:
        training = _training_api()
        config = training.TrainingConfig.from_dict(self.training_spec)
        epochs = int(config.epochs)
        resume = load_training_state(self.ctx.job_id) if self.ctx.attempt > 1 else None
        try:
            result = self._train(training, config, resume)
        except TrainingStateError as exc:
            if resume is None:
                raise
            log.warning("job %s: its saved state does not fit (%s); starting over",
                        self.ctx.job_id, exc)
            result = self._train(training, config, None)
        final_net = _final_network(result)
        if epochs in self.milestones and self.milestones[epochs].checkpoint_id:
            done = self.milestones[epochs]
            ckpt_id, meas_id = done.checkpoint_id, done.measurement_id
        else:
            self.ctx.reporter.current["fraction"] = TRAINING_SHARE
            ckpt_id, meas_id = self.checkpoint_and_measure(final_net, epochs, phase="final")
        return {"checkpoint_id": ckpt_id, "measurement_id": meas_id}

    def _train(self, training: Any, config: Any, resume: Any) -> Any:
        if resume is not None:
            log.info("job %s: resuming from its state after epoch %s", self.ctx.job_id,
                     resume.epoch)
        network = build_network(self.net_config)
        epochs = int(config.epochs)
        start = self.start_epoch = int(resume.epoch) if resume is not None else 0
        self.ctx.reporter.report("training", epoch=start, epochs=epochs,
                                 fraction=TRAINING_SHARE * start / epochs, force=True)
        self.clock = None
        try:
            return training.train(
                network, self.process, self.loaded.train, config, device=self.ctx.device,
                on_progress=self.on_progress, on_milestone=self.on_milestone,
                should_stop=self.should_stop, resume=resume, on_checkpoint=self.on_checkpoint,
                checkpoint_every=max(1, math.ceil(epochs / STATE_SAVES_PER_RUN)),
                extra={"job_id": self.ctx.job_id, "network": self.net_dict,
                       "process": self.process.spec()},
            )
        except training.TrainingCanceled:
            raise JobCanceled() from None


def _final_network(result: Any) -> torch.nn.Module:
    """The network to measure and save: the EMA copy when kept, else the live weights."""
    return result.eval_network


def run_train(ctx: JobContext) -> dict[str, Any]:
    """Job body for `type == "train"`; returns the job columns to set on success."""
    return TrainRun(ctx).run()
