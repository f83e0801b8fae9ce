"""Job submission: documented defaults, 422 naming the field, enqueueing, listing, cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from sqlalchemy.orm import Session

from app.main import create_app
from core.contract import TRAINING_RECIPES
from core.settings import Settings
from core.tables import Artifact, Checkpoint, Job, JobMilestone, JobStatus, utcnow
from tests.app.helpers import assert_problem, create_mixture, npy_bytes, upload

State = Callable[[], dict[str, Any]]


@pytest.fixture
def dataset(api: TestClient) -> dict[str, Any]:
    return create_mixture(api, n_samples=200)


def make_checkpoint(session: Session, owner_id: str, event_shape: list[int],
                    num_classes: int | None = None) -> str:
    sha = f"{len(event_shape)}{owner_id[-10:]}".ljust(64, "0")
    if session.get(Artifact, sha) is None:
        session.add(Artifact(sha256=sha, size_bytes=1, media_type="application/octet-stream"))
    row = Checkpoint(owner_id=owner_id, sha256=sha, size_bytes=1, source="upload",
                     config={"event_shape": event_shape, "num_classes": num_classes,
                             "process": {"kind": "sl", "sigma0": 0.1},
                             "network": {"arch": "mlp"}, "parametrization": "score"})
    session.add(row)
    session.commit()
    return row.id


def test_train_with_only_a_dataset_gets_every_default(api: TestClient, dataset: dict[str, Any],
                                                      bundled_redis: Redis) -> None:
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"]})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["type"] == "train"
    assert job["progress"]["phase"] == "waiting_for_worker"  # no worker runs in these tests
    assert job["attempts"] == 0
    for key in ("progress", "created_at", "started_at", "finished_at", "error", "measurement_id",
                "checkpoint_id", "milestones", "request"):
        assert key in job
    req = job["request"]
    assert req["process"] == {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0}
    net = req["network"]
    assert net["arch"] == "mlp" and net["dim"] == 2 and net["fourier_features"] == 256
    assert net["width"] == 512 and net["hidden_widths"] == [512, 256]
    t = req["training"]
    assert t["recipe"] == "converged" and (t["num_steps"], t["milestones"]) == (10, [])
    assert {k: t[k] for k in TRAINING_RECIPES["converged"]} == TRAINING_RECIPES["converged"]
    assert t["stop_when_converged"] is False and t["convergence_tolerance"] == 0.02
    m = req["measurement"]
    assert m["n_times"] >= 64 and m["split"] == "test" and m["n_samples"] > 0
    assert (m["t_min"], m["t_max"]) == (1e-5, 1.0)
    assert m["density_bound"] is False and m["data_entropy"] is False
    assert req["data_sha256"] == dataset["sha256"] and req["queue"] == "cpu"
    # enqueued on RQ with the DB id, and nothing else travels
    queue = Queue("cpu", connection=bundled_redis)
    assert queue.job_ids == [job["id"]]
    assert queue.fetch_job(job["id"]).args == (job["id"],)
    assert api.get(f"/v1/jobs/{job['id']}").json() == job


def test_the_paper_recipe_is_the_papers_training_exactly(api: TestClient,
                                                         dataset: dict[str, Any]) -> None:
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"],
                                   "training": {"recipe": "paper"}})
    t = r.json()["request"]["training"]
    assert (t["lr"], t["batch_size"], t["num_steps"], t["lr_schedule"]) == (1e-4, 40, 10, "constant")
    assert (t["ema_decay"], t["log_snr_share"], t["weighting"], t["warmup_steps"]) == (
        None, 0.0, "unit", 0)


def test_overriding_one_field_keeps_the_rest_of_the_recipe(api: TestClient,
                                                           dataset: dict[str, Any]) -> None:
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"],
                                   "training": {"lr": 1e-4, "batch_size": 32, "ema_decay": None}})
    t = r.json()["request"]["training"]
    recipe = TRAINING_RECIPES["converged"]
    assert (t["lr"], t["batch_size"], t["ema_decay"]) == (1e-4, 32, None)  # given: null turns EMA off
    for key in ("lr_schedule", "lr_final_fraction", "warmup_steps", "log_snr_share", "weighting"):
        assert t[key] == recipe[key], key


def test_unknown_recipe_is_refused(api: TestClient, dataset: dict[str, Any]) -> None:
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"],
                                   "training": {"recipe": "fast"}})
    assert_problem(r, 422)


def test_image_data_get_a_unet_and_one_throw_per_point(api: TestClient) -> None:
    x = np.random.default_rng(0).uniform(size=(60, 1, 8, 8))
    ds = upload(api, npy_bytes(x), form={"test_fraction": "0.2"}).json()
    req = api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]}).json()["request"]
    assert req["network"]["arch"] == "unet" and req["network"]["in_channels"] == 1
    assert req["training"]["num_steps"] == 1


def test_explicit_settings_are_kept(api: TestClient, dataset: dict[str, Any]) -> None:
    body = {"type": "train", "dataset_id": dataset["id"],
            "process": {"kind": "sl", "sigma0": 0.2},
            "network": {"arch": "mlp", "width": 64, "hidden_widths": [32]},
            "training": {"epochs": 10, "milestones": [5, 2], "batch_size": 16, "lr": 1e-3,
                         "ema_decay": 0.99},
            "measurement": {"n_times": 100, "n_samples": 4000, "seed": 4,
                            "density_bound": True, "t_max": 0.5},
            "queue": "cpu"}
    req = api.post("/v1/jobs", json=body).json()["request"]
    assert req["process"] == {"kind": "sl", "sigma0": 0.2}
    assert req["network"]["width"] == 64 and req["network"]["hidden_widths"] == [32]
    assert req["training"]["milestones"] == [2, 5] and req["training"]["ema_decay"] == 0.99
    assert req["measurement"]["t_max"] == 0.5 and req["measurement"]["density_bound"] is True


BAD_TRAIN: list[tuple[dict[str, Any], str]] = [
    ({"training": {"epochs": 5, "milestones": [3, 7]}}, "training.milestones"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"training": {"batch_size": 500}}, "training.batch_size"),
    ({"training": {"lr": -1}}, "training.lr"),
    ({"training": {"weighting": "heavy"}}, "training.weighting"),
    ({"network": {"dim": 3}}, "network.dim"),
    ({"network": {"arch": "unet"}}, "network.arch"),
    ({"network": {"depth": 9}}, "network.depth"),
    ({"network": {"num_classes": 3}}, "network.num_classes"),
    ({"process": {"kind": "subvp"}}, "process.kind"),
    ({"process": {"kind": "vp", "beta_min": 20.0}}, "process"),
    ({"process": {"kind": "sl", "kappa": 1.0}}, "process.kappa"),
    ({"measurement": {"t_max": 1.0}, "process": {"kind": "sl"}}, "measurement.t_max"),
    ({"measurement": {"n_times": 1}}, "measurement.n_times"),
    ({"measurement": {"n_times": 3}}, "measurement.n_times"),  # fewer than a quadrature panel
    ({"measurement": {"n_times": 64, "n_samples": 500}}, "measurement.n_samples"),  # < 16 per node
    ({"measurement": {"split": "validation"}}, "measurement.split"),
    ({"queue": "tpu"}, "queue"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize("extra, field", BAD_TRAIN, ids=[f for _, f in BAD_TRAIN])
def test_inconsistent_train_settings_are_422_naming_the_field(
        api: TestClient, dataset: dict[str, Any], state: State, extra: dict[str, Any],
        field: str, bundled_redis: Redis) -> None:
    before = state()
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"], **extra})
    assert_problem(r, 422, field)
    assert state() == before
    assert Queue("cpu", connection=bundled_redis).count == 0


@pytest.mark.parametrize("extra, field, setting", [
    ({"training": {"epochs": 10**6}}, "training.epochs", "MAX_EPOCHS"),
    ({"measurement": {"n_times": 10**6}}, "measurement.n_times", "MAX_CURVE_POINTS"),
    ({"measurement": {"n_samples": 10**9}}, "measurement.n_samples", "MAX_N_SAMPLES"),
])
def test_values_over_a_cap_are_422_naming_the_cap(api: TestClient, dataset: dict[str, Any],
                                                  extra: dict[str, Any], field: str,
                                                  setting: str) -> None:
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"], **extra})
    doc = assert_problem(r, 422, field)
    assert doc["limit_setting"] == setting and setting in doc["detail"]


def test_no_held_out_points_is_422(api: TestClient) -> None:
    ds = upload(api, npy_bytes(np.random.default_rng(0).normal(size=(50, 2))),
                form={"test_fraction": "0"}).json()
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]})
    assert_problem(r, 422, "measurement.split")
    ok = api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"],
                                    "measurement": {"split": "train"}})
    assert ok.status_code == 202


def test_unknown_dataset_is_404(api: TestClient, state: State) -> None:
    before = state()
    assert_problem(api.post("/v1/jobs", json={"type": "train", "dataset_id": "ds_nope"}), 404,
                   "dataset_id")
    assert state() == before


def test_unknown_type_and_missing_fields_are_422(api: TestClient) -> None:
    assert_problem(api.post("/v1/jobs", json={"type": "dance"}), 422, "type")
    assert_problem(api.post("/v1/jobs", json={"type": "train"}), 422, "dataset_id")
    assert_problem(api.post("/v1/jobs", content=b"[", headers={"content-type":
                                                               "application/json"}), 422)


def test_redis_down_is_503_and_creates_nothing(settings: Settings, owner_key: tuple[str, str],
                                               api: TestClient, dataset: dict[str, Any],
                                               state: State, tmp_path: Any) -> None:
    bad = settings.model_copy(update={"redis_url": f"unix://{tmp_path}/none.sock"})
    before = state()
    with TestClient(create_app(bad), raise_server_exceptions=False) as c:
        r = c.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"], "queue": "cpu"},
                   headers={"Authorization": f"Bearer {owner_key[1]}"})
    assert_problem(r, 503)
    assert r.headers["retry-after"]
    assert state() == before


def test_measure_job_checks_checkpoint_and_shape(api: TestClient, session: Session,
                                                 owner_key: tuple[str, str],
                                                 other_key: tuple[str, str],
                                                 dataset: dict[str, Any]) -> None:
    good = make_checkpoint(session, owner_key[0], [2])
    r = api.post("/v1/jobs", json={"type": "measure", "checkpoint_id": good,
                                   "dataset_id": dataset["id"]})
    assert r.status_code == 202, r.text
    req = r.json()["request"]
    assert req["process"] == {"kind": "sl", "sigma0": 0.1}
    assert req["measurement"]["t_max"] == pytest.approx(1 - 1e-5)
    assert r.json()["input_checkpoint_id"] == good
    wrong = make_checkpoint(session, owner_key[0], [1, 8, 8])
    doc = assert_problem(api.post("/v1/jobs", json={"type": "measure", "checkpoint_id": wrong,
                                                    "dataset_id": dataset["id"]}), 422,
                         "dataset_id")
    assert "[1, 8, 8]" in doc["detail"]
    foreign = make_checkpoint(session, other_key[0], [2])
    for ckpt in ("ckpt_nope", foreign):
        assert_problem(api.post("/v1/jobs", json={"type": "measure", "checkpoint_id": ckpt,
                                                  "dataset_id": dataset["id"]}), 404,
                       "checkpoint_id")


def test_sample_job_and_its_outputs(api: TestClient, session: Session, settings: Settings,
                                    owner_key: tuple[str, str]) -> None:
    ckpt = make_checkpoint(session, owner_key[0], [2])
    over = api.post("/v1/jobs", json={"type": "sample", "checkpoint_id": ckpt,
                                      "n": settings.max_sample_count + 1})
    assert_problem(over, 422, "n")
    assert_problem(api.post("/v1/jobs", json={"type": "sample", "checkpoint_id": ckpt,
                                              "labels": [0]}), 422, "labels")
    r = api.post("/v1/jobs", json={"type": "sample", "checkpoint_id": ckpt})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["request"] == {"type": "sample", "checkpoint_id": ckpt, "n": 64, "seed": 0,
                              "solver": "heun", "steps": 100, "labels": None, "queue": "cpu"}
    assert_problem(api.get(f"/v1/jobs/{job['id']}/samples.npy"), 409)
    # the worker's part, done by hand: store samples and succeed
    from core.artifacts import get_artifact_store

    samples = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    store = get_artifact_store(settings)
    row = session.get(Job, job["id"])
    assert row is not None
    row.samples_sha256 = store.put_bytes(session, npy_bytes(samples), "application/octet-stream")
    row.status, row.finished_at = JobStatus.succeeded.value, utcnow()
    session.commit()
    got = api.get(f"/v1/jobs/{job['id']}/samples.npy")
    assert got.status_code == 200
    np.testing.assert_array_equal(np.load(__import__("io").BytesIO(got.content)), samples)
    assert_problem(api.get(f"/v1/jobs/{job['id']}/samples.png"), 404)


def test_list_filters_by_status_and_paginates(api: TestClient, session: Session,
                                              dataset: dict[str, Any]) -> None:
    ids = [api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"]}).json()["id"]
           for _ in range(3)]
    row = session.get(Job, ids[0])
    assert row is not None
    row.status = JobStatus.failed.value
    row.error = "the dataset's samples have shape [2] but the network takes [3]"
    session.commit()
    queued = api.get("/v1/jobs", params={"status": "queued"}).json()
    assert queued["total"] == 2 and {j["id"] for j in queued["items"]} == set(ids[1:])
    failed = api.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [j["id"] for j in failed] == [ids[0]] and failed[0]["error"].startswith("the dataset")
    page = api.get("/v1/jobs", params={"limit": 1, "offset": 1}).json()
    assert page["items"][0]["id"] == ids[1] and page["next_offset"] == 2
    assert_problem(api.get("/v1/jobs", params={"status": "lost"}), 422, "status")


def test_milestones_and_progress_appear_on_the_document(api: TestClient, session: Session,
                                                        dataset: dict[str, Any]) -> None:
    job_id = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"],
                                        "training": {"epochs": 4, "milestones": [2]}}).json()["id"]
    row = session.get(Job, job_id)
    assert row is not None
    row.status = JobStatus.running.value
    row.progress = {"phase": "training", "epoch": 3, "epochs": 4, "loss": 0.5, "fraction": 0.6,
                    "eta_seconds": 12.0, "samples_per_second": 1000.0}
    session.add(JobMilestone(job_id=job_id, epoch=2, measurement_id="meas_x",
                             checkpoint_id="ckpt_x"))
    session.commit()
    doc = api.get(f"/v1/jobs/{job_id}").json()
    assert doc["progress"] == {"phase": "training", "epoch": 3, "epochs": 4, "loss": 0.5,
                               "fraction": 0.6, "eta_seconds": 12.0}
    assert doc["milestones"] == [{"epoch": 2, "measurement_id": "meas_x",
                                  "checkpoint_id": "ckpt_x"}]


def test_cancel_queued_job_is_immediate(api: TestClient, dataset: dict[str, Any],
                                        bundled_redis: Redis) -> None:
    job = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"]}).json()
    r = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "canceled" and doc["cancel_requested"] and doc["finished_at"]
    assert Queue("cpu", connection=bundled_redis).count == 0
    assert_problem(api.post(f"/v1/jobs/{job['id']}/cancel"), 409)
    assert_problem(api.post("/v1/jobs/job_nope/cancel"), 404)


def test_cancel_running_job_asks_the_worker(api: TestClient, session: Session,
                                            dataset: dict[str, Any]) -> None:
    job = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"]}).json()
    row = session.get(Job, job["id"])
    assert row is not None
    row.status = JobStatus.running.value
    session.commit()
    doc = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert doc["status"] == "running" and doc["cancel_requested"] is True
