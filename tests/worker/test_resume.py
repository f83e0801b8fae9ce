"""A train job whose worker died resumes from its last saved training state, and ends where an
uninterrupted run ends (bit for bit on CPU)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.db import session_scope
from core.tables import Job, Measurement, utcnow
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request
from worker import jobs, train_job
from worker.reconciler import reconcile
from worker.resume import has_training_state


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it may touch the job row."""


def test_crashed_train_job_resumes_and_matches_an_uninterrupted_run(
    service_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner)
        request = train_request(ds, epochs=3, milestones=[1], batch_size=25)
        crashed = make_job(session, owner, request).id
        clean = make_job(session, owner, request).id

    # first run: the worker "dies" right after the state of epoch 2 was saved
    original_save = train_job.TrainRun.on_checkpoint

    def save_then_die(self, state):
        original_save(self, state)
        if state.epoch == 2:
            raise Crash()

    with monkeypatch.context() as m:
        m.setattr(train_job.TrainRun, "on_checkpoint", save_then_die)
        m.setattr(jobs, "_finish", lambda *a, **k: True)  # a killed horse writes nothing
        m.setattr(jobs, "_cleanup", lambda ctx: None)
        with pytest.raises(Crash):
            jobs.run_job(crashed)
    assert has_training_state(crashed)
    with session_scope() as session:
        assert session.get(Job, crashed).status == "running"

    # the run's lease expires (nothing renews it any more); the reconciler sees that and puts
    # the job back on the queue
    with session_scope() as session:
        session.get(Job, crashed).heartbeat_at = utcnow() - timedelta(hours=1)
    assert reconcile().requeued == [crashed]

    seen: list[int | None] = []
    original_train = train_job.TrainRun._train

    def spy(self, resume):
        seen.append(None if resume is None else resume.epoch)
        return original_train(self, resume)

    monkeypatch.setattr(train_job.TrainRun, "_train", spy)
    assert jobs.run_job(crashed) == "succeeded"
    assert seen == [2]  # resumed after epoch 2, not from scratch
    assert not has_training_state(crashed)  # removed once the job ended
    assert jobs.run_job(clean) == "succeeded"

    with session_scope() as session:
        a, b = session.get(Job, crashed), session.get(Job, clean)
        assert a.attempts == 2 and [m.epoch for m in a.milestones] == [1]
        sa = session.get(Measurement, a.measurement_id).summary["neural_entropy"]
        sb = session.get(Measurement, b.measurement_id).summary["neural_entropy"]
    assert sa == sb


def test_job_without_milestones_resumes_mid_epoch_from_a_timed_state(
    service_env, monkeypatch: pytest.MonkeyPatch, artifact_backend: str
) -> None:
    """One epoch, no milestones: only the wall-clock interval saves states (here after every
    step); killed after step 3 the job resumes at step 3 (from the local or the S3 store) and
    ends bit for bit where the uninterrupted run ends."""
    from core.settings import get_settings

    monkeypatch.setenv("TRAINING_STATE_INTERVAL_SECONDS", "1e-9")
    get_settings.cache_clear()
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner)
        request = train_request(ds, epochs=1, batch_size=25)  # 150 training points: 6 steps
        crashed = make_job(session, owner, request).id
        clean = make_job(session, owner, request).id

    original_save = train_job.TrainRun.on_checkpoint

    def save_then_die(self, state):
        original_save(self, state)
        if state.step == 3:
            raise Crash()

    with monkeypatch.context() as m:
        m.setattr(train_job.TrainRun, "on_checkpoint", save_then_die)
        m.setattr(jobs, "_finish", lambda *a, **k: True)
        m.setattr(jobs, "_cleanup", lambda ctx: None)
        with pytest.raises(Crash):
            jobs.run_job(crashed)
    assert has_training_state(crashed)
    with session_scope() as session:
        session.get(Job, crashed).heartbeat_at = utcnow() - timedelta(hours=1)
    assert reconcile().requeued == [crashed]

    seen: list[tuple[int, int] | None] = []
    original_train = train_job.TrainRun._train

    def spy(self, resume):
        seen.append(None if resume is None else (resume.epoch, resume.step))
        return original_train(self, resume)

    monkeypatch.setattr(train_job.TrainRun, "_train", spy)
    assert jobs.run_job(crashed) == "succeeded"
    assert seen == [(0, 3)]  # mid-epoch: 3 of 6 steps kept, not from zero
    assert not has_training_state(crashed)
    assert jobs.run_job(clean) == "succeeded"
    with session_scope() as session:
        a, b = session.get(Job, crashed), session.get(Job, clean)
        sa = session.get(Measurement, a.measurement_id).summary["neural_entropy"]
        sb = session.get(Measurement, b.measurement_id).summary["neural_entropy"]
    assert sa == sb
