"""Progress goes to the DB at a bounded rate; the cancel flag is read back with it."""

from __future__ import annotations

from core.db import session_scope
from core.tables import Job
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request
from worker.progress import TRAINING_SHARE, ProgressReporter, TrainingClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _job_id() -> str:
    with session_scope() as session:
        owner = make_owner(session)
        return make_job(session, owner, train_request(make_mixture_dataset(session, owner))).id


def test_progress_writes_are_bounded_by_the_interval(service_env) -> None:
    clock = FakeClock()
    reporter = ProgressReporter(_job_id(), interval=1.0, clock=clock)
    for i in range(10_000):  # 10,000 steps over 10 simulated seconds
        clock.now = i * 0.001
        reporter.report("training", epoch=1, epochs=1, loss=1.0 / (i + 1), fraction=i / 1e4)
    assert reporter.writes <= 11  # one at the start, then at most one per second


def test_phase_change_and_force_write_at_once(service_env) -> None:
    clock = FakeClock()
    reporter = ProgressReporter(_job_id(), interval=100.0, clock=clock)
    assert reporter.report("training", epoch=1) is True
    assert reporter.report("training", epoch=2) is False
    assert reporter.report("measuring", epoch=2) is True
    assert reporter.report("measuring", epoch=2, force=True) is True


def test_progress_document_lands_on_the_job_row(service_env) -> None:
    job_id = _job_id()
    ProgressReporter(job_id, interval=0.0).report(
        "training", epoch=3, epochs=10, loss=float("nan"), fraction=1.7, eta_seconds=12.345
    )
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.progress == {"phase": "training", "epoch": 3, "epochs": 10, "loss": None,
                                "fraction": 1.0, "eta_seconds": 12.3}
        assert job.heartbeat_at is not None


def test_cancel_flag_is_seen_within_one_interval(service_env) -> None:
    job_id = _job_id()
    clock = FakeClock()
    reporter = ProgressReporter(job_id, interval=1.0, clock=clock)
    assert reporter.cancel_requested() is False
    with session_scope() as session:
        session.get(Job, job_id).cancel_requested = True
    assert reporter.cancel_requested() is False  # cached: no DB read within the interval
    clock.now = 1.0
    assert reporter.cancel_requested() is True


def test_training_clock_fraction_and_eta() -> None:
    clock = FakeClock()
    tc = TrainingClock(epochs=4, steps_per_epoch=10, clock=clock)
    clock.now = 10.0
    done = tc.steps_done(epoch=2, step=10)  # half of the steps in 10 s
    assert done == 20
    assert tc.fraction(done) == TRAINING_SHARE / 2
    assert abs(tc.eta_seconds(done) - 10.0 / TRAINING_SHARE) < 1e-9
