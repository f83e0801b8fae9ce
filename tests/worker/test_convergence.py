"""A train job's S_NN trajectory and verdict, stopping once converged, and `split: both`."""

from __future__ import annotations

import math

from core.contract import Convergence, MeasurementSummary
from core.db import session_scope
from core.tables import Checkpoint, Job, Measurement
from models.training.convergence import TrajectoryPoint, convergence_verdict, evaluation_epochs
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request
from worker.jobs import run_job


def _submit(**kwargs) -> str:
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner)
        return make_job(session, owner, train_request(ds, **kwargs)).id


def _finished(job_id: str) -> tuple[Job, Convergence, MeasurementSummary, Measurement]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        meas = session.get(Measurement, job.measurement_id)
        session.expunge_all()
    return (job, Convergence.model_validate(job.convergence),
            MeasurementSummary.model_validate(meas.summary), meas)


def test_a_train_job_records_its_trajectory_and_a_verdict(service_env) -> None:
    job_id = _submit(epochs=6, milestones=[3], batch_size=25)
    assert run_job(job_id) == "succeeded"
    job, conv, summary, meas = _finished(job_id)
    assert [p.epoch for p in conv.trajectory] == evaluation_epochs(6, (3,)) == [1, 2, 3, 4, 5, 6]
    assert all(p.stderr > 0 and math.isfinite(p.nats) for p in conv.trajectory)
    assert conv.verdict in ("converged", "not_converged") and conv.stopped_at_epoch is None
    assert conv.window == [2, 6] and conv.extrapolated is not None and conv.extrapolated.epoch == 12
    assert conv.tolerance == 0.02 and "per doubling" in conv.reason
    assert meas.epoch == 6  # trained to the end
    # the last estimate and the final measurement measure the same weights on the same pool
    last = conv.trajectory[-1]
    ne = summary.neural_entropy
    assert abs(last.nats - ne.nats) < 5 * math.hypot(last.stderr, ne.stderr)


def test_stop_when_converged_ends_the_job_at_the_first_converged_verdict(service_env) -> None:
    job_id = _submit(epochs=60, batch_size=25, stop_when_converged=True,
                     convergence_tolerance=0.9)  # loose: the tiny network gets there early
    assert run_job(job_id) == "succeeded"
    job, conv, _, meas = _finished(job_id)
    stopped = conv.stopped_at_epoch
    assert conv.verdict == "converged" and stopped is not None and stopped < 60
    points = [TrajectoryPoint(p.epoch, p.nats, p.stderr) for p in conv.trajectory]
    assert points[-1].epoch == stopped
    # the first estimate at which the verdict holds, and no earlier one
    verdicts = [convergence_verdict(points[: i + 1], 0.9).verdict for i in range(len(points))]
    assert verdicts[-1] == "converged" and "converged" not in verdicts[:-1]
    with session_scope() as session:
        ckpt = session.get(Checkpoint, job.checkpoint_id)
        assert ckpt is not None and ckpt.epoch == stopped
    assert meas.epoch == stopped


def test_split_both_reports_the_training_figure_and_the_gap(service_env) -> None:
    job_id = _submit(epochs=1, batch_size=25, measurement={"split": "both"})
    assert run_job(job_id) == "succeeded"
    _, _, summary, meas = _finished(job_id)
    gen = summary.generalization
    assert gen is not None
    assert gen.gap_nats == gen.train.nats - summary.neural_entropy.nats
    assert gen.gap_stderr == math.hypot(gen.train.stderr, summary.neural_entropy.stderr)
    assert gen.relative_gap == gen.gap_nats / summary.neural_entropy.nats
    assert meas.reproducibility["split"] == "both"
