"""Train jobs on nested subsets (`n_train`): the worker trains, and measures the training split,
on exactly the subset; the held-out part stays the dataset's own."""

from __future__ import annotations

import pytest

from core.db import session_scope
from core.tables import Job, Measurement
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request
from worker.errors import JobInputError
from worker.inputs import load_dataset
from worker.jobs import run_job


def _rows(x) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.tolist()}


def test_loaded_dataset_swaps_only_its_training_part(service_env) -> None:
    with session_scope() as session:
        ds = make_mixture_dataset(session, make_owner(session), n=200, test_fraction=0.25)
        loaded = load_dataset(session, ds.id)
    sub = loaded.with_train_subset(60, 3)
    assert len(loaded.train) == 150 and len(sub.train) == 60
    assert _rows(sub.train.x) < _rows(loaded.train.x)
    assert _rows(sub.train.x) < _rows(loaded.with_train_subset(100, 3).train.x)  # nested
    assert sub.test is loaded.test and sub.data is loaded.data and sub.split == loaded.split
    assert loaded.with_train_subset(None, 3) is loaded
    with pytest.raises(JobInputError, match="150 training points"):
        loaded.with_train_subset(151, 0)


def test_train_job_trains_and_measures_on_the_subset(service_env) -> None:
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner, n=200, test_fraction=0.25)
        on_train = {"split": "train"}
        sub = make_job(session, owner, train_request(ds, epochs=1, n_train=60, subset_seed=3,
                                                     measurement=on_train)).id
        full = make_job(session, owner, train_request(ds, epochs=1, measurement=on_train)).id
    assert run_job(sub) == "succeeded" and run_job(full) == "succeeded"
    with session_scope() as session:
        pools = {job_id: session.get(Measurement, session.get(Job, job_id).measurement_id)
                 .summary["n_pool"] for job_id in (sub, full)}
    assert pools == {sub: 60, full: 150}
