"""Sweep submission over HTTP (SQLite and PostgreSQL, real Redis queue): one resolved train job per
grid point, the cap, 422 naming the grid axis or base field, owners, list, cancel and delete.
The jobs are not run here (tests/app/test_sweeps_run.py runs them)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from sqlalchemy.orm import Session

from app.main import create_app
from app.schemas.sweeps import SweepCounts
from app.services.sweeps import derive_status
from core.contract import TrainJobSpec
from core.settings import Settings
from core.tables import Job
from tests.app.helpers import assert_problem, create_mixture

State = Callable[[], dict[str, Any]]
TINY = {"arch": "mlp", "fourier_features": 8, "width": 16, "hidden_widths": [16]}


@pytest.fixture
def dataset(api: TestClient) -> dict[str, Any]:
    return create_mixture(api, n_samples=300)  # all 300 for training; held out: fresh draws


def base(dataset: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"dataset_id": dataset["id"], "network": TINY, "queue": "cpu",
            "training": {"epochs": 2, "batch_size": 32}, **extra}


def post(api: TestClient, body: dict[str, Any], **kwargs: Any) -> Any:
    return api.post("/v1/sweeps", json=body, **kwargs)


def submitted(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = post(api, body)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/sweeps/{r.json()['id']}"
    return r.json()


def test_one_resolved_train_job_per_grid_point(api: TestClient, dataset: dict[str, Any],
                                               bundled_redis: Redis) -> None:
    grid = {"n_train": [64, 128, 256], "seed": [0, 1],
            "process": [{"kind": "vp"}, {"kind": "vp", "kappa": 0.1}, {"kind": "sl"}]}
    doc = submitted(api, {"base": base(dataset), "grid": grid, "subset_seed": 5})
    assert doc["id"].startswith("swp_") and doc["status"] == "queued"
    assert doc["counts"] == {"queued": 18, "running": 0, "succeeded": 0, "failed": 0,
                             "canceled": 0, "total": 18}
    assert doc["table"] == []
    assert [f["process"] for f in doc["fits"]] == ["vp", "vp(kappa=0.1)", "sl"]
    assert all(f["n_points"] == 0 and f["a"] is None and f["note"] for f in doc["fits"])
    entries = doc["jobs"]
    coords = [(j["n_train"], j["process"], j["seed"]) for j in entries]
    assert coords == list(itertools.product([64, 128, 256], ["vp", "vp(kappa=0.1)", "sl"], [0, 1]))
    processes = {"vp": {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0},
                 "vp(kappa=0.1)": {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 0.1},
                 "sl": {"kind": "sl", "sigma0": 0.1}}
    for entry in entries:
        job = api.get(f"/v1/jobs/{entry['id']}").json()
        assert job["sweep_id"] == doc["id"] and job["links"]["sweep"] == doc["links"]["self"]
        spec = TrainJobSpec.model_validate(job["request"])  # a normal, fully resolved train job
        assert spec.n_train == entry["n_train"] and spec.subset_seed == 5
        assert spec.training.seed == entry["seed"] and spec.training.epochs == 2
        assert spec.process.model_dump() == processes[entry["process"]]
        assert spec.network["width"] == 16 and spec.dataset_id == dataset["id"]
        assert entry["status"] == "queued" and entry["error"] is None and entry["epochs"] == 2
    # no live worker listens on `cpu`: a window of one job; the sweep feeds the others to the
    # queue as its jobs end (tests/app/test_sweep_feed.py)
    assert Queue("cpu", connection=bundled_redis).job_ids == [entries[0]["id"]]
    assert api.get(doc["links"]["self"]).json() == doc


def test_without_an_n_train_axis_every_job_trains_on_the_whole_split(
        api: TestClient, dataset: dict[str, Any]) -> None:
    doc = submitted(api, {"base": base(dataset), "grid": {"seed": [3, 4]}})
    assert [(j["n_train"], j["seed"], j["process"]) for j in doc["jobs"]] == [(300, 3, "vp"),
                                                                             (300, 4, "vp")]
    assert doc["fits"] == []  # a fit needs the n_train axis
    empty = submitted(api, {"base": base(dataset)})  # no axis at all: one job
    assert empty["counts"]["total"] == 1


def test_network_axis_entries_override_base_network_keys(api: TestClient,
                                                         dataset: dict[str, Any]) -> None:
    grid = {"network": [{"width": 8}, {"fourier_features": 4, "hidden_widths": [8, 8]}]}
    doc = submitted(api, {"base": base(dataset), "grid": grid})
    assert [j["network"] for j in doc["jobs"]] == ["width=8",
                                                   "fourier_features=4, hidden_widths=[8,8]"]
    nets = [api.get(f"/v1/jobs/{j['id']}").json()["request"]["network"] for j in doc["jobs"]]
    assert (nets[0]["width"], nets[0]["fourier_features"], nets[0]["hidden_widths"]) == (8, 8, [16])
    assert (nets[1]["width"], nets[1]["fourier_features"], nets[1]["hidden_widths"]) == \
        (16, 4, [8, 8])


def test_steps_budget_scales_epochs_and_milestones_to_equal_steps(
        api: TestClient, dataset: dict[str, Any]) -> None:
    training = {"epochs": 2, "batch_size": 32, "milestones": [1]}
    doc = submitted(api, {"base": base(dataset, training=training),
                          "grid": {"n_train": [64, 100, 256]}, "training_budget": "steps"})
    # steps per epoch ceil(N / 32): 2, 4, 8 -> epochs 2 * 8/2, 2 * 8/4, 2 * 8/8
    assert [j["epochs"] for j in doc["jobs"]] == [8, 4, 2]
    milestones = [api.get(f"/v1/jobs/{j['id']}").json()["request"]["training"]["milestones"]
                  for j in doc["jobs"]]
    assert milestones == [[4], [2], [1]]


def test_the_grid_size_is_capped_by_max_sweep_jobs(settings: Settings, owner_key: tuple[str, str],
                                                   dataset: dict[str, Any], state: State) -> None:
    small = settings.model_copy(update={"max_sweep_jobs": 5})
    before = state()
    with TestClient(create_app(small), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        body = {"base": base(dataset), "grid": {"n_train": [64, 128, 256], "seed": [0, 1]}}
        problem = assert_problem(post(c, body), 422, "grid")
        assert problem["limit"] == 5 and problem["limit_setting"] == "MAX_SWEEP_JOBS"
        assert "6" in problem["detail"]
        assert post(c, {"base": base(dataset), "grid": {"seed": [0, 1, 2, 3, 4]}}).status_code == 202
    assert state()["sweeps"] == before["sweeps"] + 1


@pytest.mark.parametrize(("body_of", "field", "says"), [
    (lambda d: {"base": base(d), "grid": {"n_train": [64, 301]}}, "grid.n_train",
     "n_train=301: n_train = 301 exceeds the 300 training points"),
    (lambda d: {"base": base(d), "grid": {"n_train": [16, 64]}}, "grid.n_train", "smaller than one"),
    (lambda d: {"base": base(d, training={"epochs": 10**6}), "grid": {"seed": [0]}},
     "base.training.epochs", "MAX_EPOCHS"),
    (lambda d: {"base": base(d, training={"epochs": 2, "milestones": [3]})},
     "base.training.milestones", "outside"),
    (lambda d: {"base": base(d), "grid": {"network": [{"width": 0}]}}, "grid.network.width",
     "invalid network"),
    (lambda d: {"base": base(d), "grid": {"seed": [1, 1]}}, "grid.seed", "repeats 1"),
    (lambda d: {"base": base(d), "grid": {"process": [{"kind": "vp"}, {"kind": "vp",
                                                                       "kappa": 1.0}]}},
     "grid.process", "repeats vp"),
    (lambda d: {"base": base(d, n_train=64), "grid": {"n_train": [64, 128]}}, "base.n_train",
     "axis"),
    (lambda d: {"base": base(d, process={"kind": "sl"}), "grid": {"process": [{"kind": "vp"}]}},
     "base.process", "axis"),
    (lambda d: {"base": base(d, subset_seed=3), "subset_seed": 4}, "base.subset_seed",
     "top level"),
    (lambda d: {"base": base(d), "grid": {"n_train": []}}, "grid.n_train", None),
    (lambda d: {"base": base(d), "grid": {"n_train": [0]}}, "grid.n_train.0", None),
    (lambda d: {"base": base(d), "grid": {"colour": [1]}}, "grid.colour", None),
    (lambda d: {"base": {**base(d), "type": "train"}}, "base.type", None),
])
def test_an_invalid_grid_point_is_422_naming_the_field_and_creates_nothing(
        api: TestClient, dataset: dict[str, Any], state: State,
        body_of: Callable[[dict[str, Any]], dict[str, Any]], field: str, says: str | None) -> None:
    before = state()
    problem = assert_problem(post(api, body_of(dataset)), 422, field)
    if says is not None:
        assert says in problem["detail"]
    assert state() == before


def test_unknown_dataset_is_404_naming_base_dataset_id(api: TestClient,
                                                       other_headers: dict[str, str],
                                                       dataset: dict[str, Any]) -> None:
    assert_problem(post(api, {"base": {"dataset_id": "ds_nope"}}), 404, "base.dataset_id")
    assert_problem(post(api, {"base": base(dataset)}, headers=other_headers), 404,
                   "base.dataset_id")


def test_redis_down_is_503_and_creates_nothing(settings: Settings, owner_key: tuple[str, str],
                                               dataset: dict[str, Any], state: State,
                                               tmp_path: Any) -> None:
    bad = settings.model_copy(update={"redis_url": f"unix://{tmp_path}/none.sock"})
    before = state()
    with TestClient(create_app(bad), raise_server_exceptions=False) as c:
        r = post(c, {"base": base(dataset), "grid": {"seed": [0, 1]}},
                 headers={"Authorization": f"Bearer {owner_key[1]}"})
    assert_problem(r, 503)
    assert state() == before


def test_another_owner_gets_404_everywhere(api: TestClient, dataset: dict[str, Any],
                                           other_headers: dict[str, str]) -> None:
    doc = submitted(api, {"base": base(dataset), "grid": {"seed": [0, 1]}})
    sid = doc["id"]
    for method, path in (("get", f"/v1/sweeps/{sid}"), ("get", f"/v1/sweeps/{sid}/table"),
                         ("get", f"/v1/sweeps/{sid}/table?format=csv"),
                         ("get", f"/v1/sweeps/{sid}/plot.png"),
                         ("post", f"/v1/sweeps/{sid}/cancel"), ("delete", f"/v1/sweeps/{sid}")):
        assert_problem(getattr(api, method)(path, headers=other_headers), 404)
    assert api.get("/v1/sweeps", headers=other_headers).json()["total"] == 0
    assert api.get(f"/v1/sweeps/{sid}").json()["counts"]["queued"] == 2  # untouched


def test_list_is_paginated_newest_first_with_counts(api: TestClient,
                                                    dataset: dict[str, Any]) -> None:
    ids = [submitted(api, {"base": base(dataset), "grid": {"seed": list(range(k))}})["id"]
           for k in (1, 2, 3)]
    page = api.get("/v1/sweeps", params={"limit": 2}).json()
    assert [s["id"] for s in page["items"]] == ids[::-1][:2] and page["total"] == 3
    assert [s["counts"]["total"] for s in page["items"]] == [3, 2]
    assert all(s["status"] == "queued" for s in page["items"]) and page["next_offset"] == 2


def test_cancel_cancels_the_unfinished_jobs_and_delete_keeps_them(
        api: TestClient, dataset: dict[str, Any], session: Session,
        bundled_redis: Redis) -> None:
    doc = submitted(api, {"base": base(dataset), "grid": {"seed": [0, 1, 2]}})
    sid, job_ids = doc["id"], [j["id"] for j in doc["jobs"]]
    running = session.get(Job, job_ids[0])  # a job a worker has taken
    running.status = "running"
    session.commit()
    assert_problem(api.delete(f"/v1/sweeps/{sid}"), 409)
    canceled = api.post(f"/v1/sweeps/{sid}/cancel").json()
    assert [j["status"] for j in canceled["jobs"]] == ["running", "canceled", "canceled"]
    assert canceled["status"] == "running"  # until the running job stops
    assert api.get(f"/v1/jobs/{job_ids[0]}").json()["cancel_requested"] is True
    assert Queue("cpu", connection=bundled_redis).job_ids == [job_ids[0]]  # others dropped
    session.refresh(running)
    running.status = "canceled"  # what the worker does between steps
    session.commit()
    assert api.get(f"/v1/sweeps/{sid}").json()["status"] == "canceled"
    assert_problem(api.post(f"/v1/sweeps/{sid}/cancel"), 409)
    assert api.delete(f"/v1/sweeps/{sid}").status_code == 204
    assert_problem(api.get(f"/v1/sweeps/{sid}"), 404)
    for job_id in job_ids:  # the jobs stay, no longer linked
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["sweep_id"] is None and "sweep" not in job["links"]


# ---- n_train on a plain train job ----
def test_train_job_n_train_is_stored_and_checked(api: TestClient, dataset: dict[str, Any]) -> None:
    plain = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"]}).json()
    assert (plain["request"]["n_train"], plain["request"]["subset_seed"]) == (None, 0)
    body = {"type": "train", "dataset_id": dataset["id"], "n_train": 100, "subset_seed": 2}
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert (r.json()["request"]["n_train"], r.json()["request"]["subset_seed"]) == (100, 2)
    too_many = assert_problem(api.post("/v1/jobs", json={**body, "n_train": 301}), 422, "n_train")
    assert "300 training points" in too_many["detail"]
    assert_problem(api.post("/v1/jobs", json={**body, "n_train": 39}), 422, "n_train")  # batch 40
    assert_problem(api.post("/v1/jobs", json={**body, "n_train": 0}), 422, "n_train")
    assert_problem(api.post("/v1/jobs", json={**body, "subset_seed": -1}), 422, "subset_seed")


def test_openapi_documents_sweeps_and_compare(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/sweeps", "/v1/sweeps/{sweep_id}", "/v1/sweeps/{sweep_id}/table",
            "/v1/sweeps/{sweep_id}/plot.png", "/v1/sweeps/{sweep_id}/cancel",
            "/v1/compare"} <= set(paths)
    assert {"202", "404", "422", "503"} <= set(paths["/v1/sweeps"]["post"]["responses"])
    assert {"204", "409"} <= set(paths["/v1/sweeps/{sweep_id}"]["delete"]["responses"])


@pytest.mark.parametrize(("counts", "status"), [
    ({"queued": 3}, "queued"),
    ({"queued": 2, "running": 1}, "running"),
    ({"queued": 1, "succeeded": 2}, "running"),
    ({"succeeded": 3}, "succeeded"),
    ({"succeeded": 2, "failed": 1}, "partial"),
    ({"failed": 3}, "failed"),
    ({"succeeded": 2, "canceled": 1}, "canceled"),
    ({"failed": 1, "canceled": 2}, "canceled"),
])
def test_status_is_derived_from_the_jobs(counts: dict[str, int], status: str) -> None:
    assert derive_status(SweepCounts(**counts, total=sum(counts.values()))) == status
