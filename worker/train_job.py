"""The train job: entropy-matching training with milestones, then the final checkpoint and
measurement.

The training state is saved (for resuming after a crash, on any worker host) every
TRAINING_STATE_INTERVAL_SECONDS of wall-clock time, every tenth of the epochs and at each
milestone. At each milestone epoch the network is
measured, and its checkpoint, measurement and the `JobMilestone` row that links them are written
in one transaction fenced on the run's attempt (`worker.lease`): a run that dies or is taken over
leaves either all three or none. At the end the final checkpoint and measurement become the job's
`checkpoint_id` / `measurement_id` (reusing the last milestone's when it is the final epoch); they
are written in the same transaction as the final status (`worker.jobs`). Heavy work happens
outside DB transactions so SQLite's single writer is never held for long.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from torch import nn

from core.contract import TrainJobSpec
from core.db import session_scope
from core.settings import code_version, get_settings
from core.tables import JobMilestone
from models.checkpoints.config import CheckpointConfig
from models.networks import build_network, network_config_from_dict
from models.parametrization import EntropyMatchingModel, Parametrization
from models.processes import ForwardProcess, process_from_spec
from models.training import (
    ProgressEvent,
    TrainingCanceled,
    TrainingConfig,
    TrainingResult,
    TrainingState,
    TrainingStateError,
    train,
)
from worker.checkpoints import store_checkpoint
from worker.context import JobContext
from worker.convergence import ConvergenceTracker
from worker.errors import JobCanceled
from worker.inputs import check_fits, load_dataset
from worker.measurements import (
    MeasurementContext,
    MeasurementResult,
    measure,
    measurement_pool,
    store_measurement,
)
from worker.progress import TRAINING_SHARE, TrainingClock
from worker.resume import load_training_state, save_training_state

STATE_SAVES_PER_RUN = 10  # training state saved about this often (for resuming after a crash)

log = logging.getLogger(__name__)


def _existing_milestones(job_id: str) -> dict[int, JobMilestone]:
    with session_scope() as session:
        rows = session.scalars(select(JobMilestone).where(JobMilestone.job_id == job_id)).all()
        for row in rows:
            session.expunge(row)
    return {row.epoch: row for row in rows}


class TrainRun:
    """One run of a train job (a resumed run continues from the last saved state).

    It is the `models.training.TrainingHooks` of its `train()` call: it turns progress events into
    the job's progress, asks the row whether to stop, saves the training state, and checkpoints
    and measures the network at each milestone.
    """

    progress_every: int | None = None  # progress events about once a second

    def __init__(self, ctx: JobContext, spec: TrainJobSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self.process: ForwardProcess = process_from_spec(spec.process.model_dump())
        with session_scope() as session:
            self.loaded = load_dataset(session, spec.dataset_id).with_train_subset(
                spec.n_train, spec.subset_seed)
        self.net_config = network_config_from_dict(spec.network)
        check_fits(tuple(self.net_config.shape), self.loaded.data)
        self.config = TrainingConfig.from_dict(spec.training.training_config_fields())
        self.parametrization: Parametrization = spec.training.parametrization
        self.checkpoint_every: int | None = max(1, math.ceil(self.config.epochs / STATE_SAVES_PER_RUN))
        self.state_interval = get_settings().training_state_interval_seconds
        self.last_state_save = time.monotonic()
        self.states_saved = 0
        self.milestones = _existing_milestones(ctx.job_id)
        self.clock: TrainingClock | None = None
        self.start_epoch = 0  # completed epochs when this run started (resumed runs: > 0)
        self.convergence: ConvergenceTracker | None = None

    # ---- models.training.TrainingHooks ----
    def on_progress(self, event: ProgressEvent) -> None:
        if self.clock is None:
            self.clock = TrainingClock(event.epochs, event.steps_per_epoch,
                                       start_epoch=self.start_epoch)
        done = self.clock.steps_done(event.epoch, event.step)
        self.ctx.reporter.report(
            "training", epoch=event.epoch, epochs=event.epochs, loss=event.loss,
            fraction=self.clock.fraction(done), eta_seconds=self.clock.eta_seconds(done),
        )

    def should_stop(self) -> bool:
        return self.ctx.reporter.cancel_requested()

    def on_checkpoint(self, state: TrainingState) -> None:
        self.last_state_save = time.monotonic()
        self.ctx.lease.write()  # a superseded run stops here instead of writing its state
        if save_training_state(self.ctx.job_id, state):
            self.states_saved += 1
            log.info("job %s: training state saved at epoch %s step %s", self.ctx.job_id,
                     state.epoch, state.step)

    def state_due(self) -> bool:
        """True once TRAINING_STATE_INTERVAL_SECONDS have passed since the last saved state."""
        return time.monotonic() - self.last_state_save >= self.state_interval

    def on_epoch_end(self, epoch: int, network: nn.Module) -> bool:
        assert self.convergence is not None
        self.ctx.check_canceled()
        return self.convergence.after_epoch(epoch, network)

    def on_milestone(self, epoch: int, network: nn.Module, state: TrainingState) -> None:
        if epoch in self.milestones:
            return  # recorded by an earlier run of this job (we resumed past it)
        store = self.checkpoint_and_measure(network, epoch, phase="milestone")
        with self.ctx.lease.session() as session:
            ckpt_id, meas_id = store(session)
            session.add(JobMilestone(job_id=self.ctx.job_id, epoch=epoch,
                                     measurement_id=meas_id, checkpoint_id=ckpt_id))
        self.milestones[epoch] = JobMilestone(epoch=epoch, measurement_id=meas_id,
                                              checkpoint_id=ckpt_id)

    # ---- checkpoint + measurement ----
    def checkpoint_and_measure(self, network: nn.Module, epoch: int,
                               phase: str) -> Callable[[Session], tuple[str, str]]:
        """Measure `network` now; returns the function that stores its checkpoint and the
        measurement in a session (the caller's fenced transaction) and returns their ids."""
        ctx, spec, data = self.ctx, self.spec, self.loaded.data
        ctx.check_canceled()
        ctx.reporter.report_phase("measuring" if phase == "final" else "milestone")
        model = EntropyMatchingModel(network, self.process, self.parametrization).eval()
        result: MeasurementResult = measure(model, self.process, self.loaded, spec.measurement,
                                            ctx.device)
        ctx.check_canceled()
        training = spec.training.model_dump()
        config = CheckpointConfig.from_dict({
            "network": spec.network, "process": self.process.spec(),
            "event_shape": list(data.event_shape), "parametrization": self.parametrization,
            "value_range": None if data.value_range is None else list(data.value_range),
            "num_classes": self.net_config.num_classes,
            "provenance": {"source": "training", "job_id": ctx.job_id, "epoch": epoch,
                           "dataset_id": self.loaded.dataset_id,
                           "dataset_sha256": self.loaded.sha256, "training": training,
                           "code_version": code_version()},
        })
        context = MeasurementContext(split=spec.measurement.split, process=self.process.spec(),
                                     network=spec.network, training=training, device=ctx.device,
                                     parametrization=self.parametrization)

        def store(session: Session) -> tuple[str, str]:
            ckpt = store_checkpoint(session, network, config, owner_id=ctx.owner_id,
                                    job_id=ctx.job_id, epoch=epoch)
            meas = store_measurement(session, result, owner_id=ctx.owner_id, job_id=ctx.job_id,
                                     loaded=self.loaded, checkpoint_id=ckpt.id, epoch=epoch,
                                     context=context)
            return ckpt.id, meas.id

        return store

    # ---- the run ----
    def run(self) -> Callable[[Session], dict[str, Any]]:
        """Train (resuming when a state was saved) and measure; returns the commit that stores
        the final checkpoint and measurement (`worker.jobs` runs it with the final status)."""
        resume = load_training_state(self.ctx.job_id) if self.ctx.attempt > 1 else None
        try:
            result = self._train(resume)
        except TrainingStateError as exc:
            if resume is None:
                raise
            log.warning("job %s: its saved state does not fit (%s); starting over",
                        self.ctx.job_id, exc)
            result = self._train(None)
        final_epoch = result.state.epoch  # < epochs when it stopped once converged
        done = self.milestones.get(final_epoch)
        if done is not None and done.checkpoint_id and done.measurement_id:
            ids = {"checkpoint_id": done.checkpoint_id, "measurement_id": done.measurement_id}
            return lambda session: ids
        self.ctx.reporter.set_fraction(TRAINING_SHARE)
        store = self.checkpoint_and_measure(result.eval_network, final_epoch, phase="final")

        def commit(session: Session) -> dict[str, Any]:
            ckpt_id, meas_id = store(session)
            return {"checkpoint_id": ckpt_id, "measurement_id": meas_id}

        return commit

    def _train(self, resume: TrainingState | None) -> TrainingResult:
        if resume is not None:
            log.info("job %s: resuming from its state after epoch %s, step %s", self.ctx.job_id,
                     resume.epoch, resume.step)
        network = build_network(self.net_config)
        epochs = self.config.epochs
        start = self.start_epoch = resume.epoch if resume is not None else 0
        self.ctx.reporter.report("training", epoch=start, epochs=epochs,
                                 fraction=TRAINING_SHARE * start / epochs, force=True)
        self.clock = None
        self.convergence = ConvergenceTracker(
            self.ctx.job_id, self.ctx.attempt, self.spec, self.process,
            measurement_pool(self.loaded, "test", self.spec.measurement.seed), self.ctx.device,
            start, lease=self.ctx.lease)
        try:
            return train(
                network, self.process, self.loaded.train, self.config, device=self.ctx.device,
                parametrization=self.parametrization, hooks=self, resume=resume,
                extra={"job_id": self.ctx.job_id, "network": self.spec.network,
                       "process": self.process.spec()},
            )
        except TrainingCanceled:
            raise JobCanceled() from None


def run_train(ctx: JobContext) -> Callable[[Session], dict[str, Any]]:
    """Job body for `type == "train"`; returns the commit of its results (`worker.jobs`)."""
    assert isinstance(ctx.spec, TrainJobSpec)
    return TrainRun(ctx, ctx.spec).run()
