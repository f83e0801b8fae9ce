"""A train job's S_NN trajectory and convergence verdict, kept on its row (`Job.convergence`).

After each log-spaced evaluation epoch (and each milestone and the last epoch) the network that
would be measured (the EMA weights when kept) gets a cheap S_NN estimate on the held-out pool,
with one fixed seed so that neighbouring estimates share their draws; the verdict of
`models.training.convergence` is recomputed and written to the row. A resumed run keeps the
estimates of the epochs it had already passed.
"""

from __future__ import annotations

from sqlalchemy import select, update
from torch import nn

from core.contract import Convergence, ConvergencePoint, ExtrapolatedPoint, TrainJobSpec
from core.db import session_scope
from core.tables import Job
from models.data import DataSet
from models.entropy.estimators import MeasurementConfig, neural_entropy
from models.parametrization import EntropyMatchingModel, Parametrization
from models.processes import ForwardProcess
from models.training.convergence import TrajectoryPoint, convergence_verdict, evaluation_epochs
from worker.lease import RunLease

CHEAP_EVALUATIONS = 16_384  # network evaluations of one trajectory estimate (~0.3 % stderr)
CHEAP_TIMES = 32  # curve points of a trajectory estimate


def _stored_trajectory(job_id: str, before: int) -> list[ConvergencePoint]:
    with session_scope() as session:
        doc = session.execute(select(Job.convergence).where(Job.id == job_id)).scalar()
    if not doc:
        return []
    return [p for p in Convergence.model_validate(doc).trajectory if p.epoch <= before]


class ConvergenceTracker:
    """Estimates S_NN on the evaluation epochs and keeps the verdict on the job row."""

    def __init__(self, job_id: str, attempt: int, spec: TrainJobSpec, process: ForwardProcess,
                 pool: DataSet, device: str, start_epoch: int,
                 lease: RunLease | None = None) -> None:
        self.lease = lease
        self.job_id, self.attempt, self.process, self.pool, self.device = (
            job_id, attempt, process, pool, device)
        training = spec.training
        self.parametrization: Parametrization = training.parametrization
        self.tolerance = training.convergence_tolerance
        self.stop_when_converged = training.stop_when_converged
        self.epochs = set(evaluation_epochs(training.epochs, tuple(training.milestones)))
        self.config = MeasurementConfig(n_times=CHEAP_TIMES, n_samples=CHEAP_EVALUATIONS,
                                        seed=spec.measurement.seed, t_min=spec.measurement.t_min,
                                        t_max=spec.measurement.t_max)
        self.trajectory = _stored_trajectory(job_id, start_epoch)
        self.current: Convergence | None = None

    def after_epoch(self, epoch: int, network: nn.Module) -> bool:
        """Estimate and judge after `epoch` if it is an evaluation epoch; True: stop now."""
        if epoch not in self.epochs:
            return False
        model = EntropyMatchingModel(network, self.process, self.parametrization)
        result = neural_entropy(model.e_theta, self.process, self.pool.x, self.config,
                                labels=self.pool.labels, device=self.device)
        self.trajectory = [p for p in self.trajectory if p.epoch < epoch]
        self.trajectory.append(ConvergencePoint(epoch=epoch, nats=result.total.mean,
                                                stderr=result.total.stderr))
        self.current = self._judge()
        stop = self.stop_when_converged and self.current.verdict == "converged"
        if stop:
            self.current = self.current.model_copy(update={"stopped_at_epoch": epoch})
        self._write(self.current)
        return stop

    def _judge(self) -> Convergence:
        points = [TrajectoryPoint(p.epoch, p.nats, p.stderr) for p in self.trajectory]
        v = convergence_verdict(points, self.tolerance)
        last = self.trajectory[-1].epoch if self.trajectory else None
        return Convergence(
            verdict=v.verdict, tolerance=v.tolerance, relative_drift=v.relative_drift,
            relative_drift_stderr=v.relative_drift_stderr, level_nats=v.level,
            extrapolated=None if v.extrapolated is None or last is None
            else ExtrapolatedPoint(epoch=2 * last, nats=v.extrapolated),
            window=None if v.window is None else list(v.window), reason=v.reason,
            trajectory=list(self.trajectory))

    def _write(self, doc: Convergence) -> None:
        if self.lease is not None:  # fenced on the run's attempt (worker.lease)
            self.lease.write(convergence=doc.model_dump(mode="json"))
            return
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == self.job_id, Job.attempts == self.attempt)
                            .values(convergence=doc.model_dump(mode="json")))
