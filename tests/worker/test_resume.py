"""A train job whose worker died resumes from its last saved training state, and ends where an
uninterrupted run ends (bit for bit on CPU)."""

from __future__ import annotations

import pytest

from core.db import session_scope
from core.tables import Job, Measurement
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

    # the reconciler sees a running job on a dead worker and puts it back on the queue
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
