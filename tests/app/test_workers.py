"""GET /v1/workers lists the workers whose lease is current, per queue, with their device; a queued
job whose queue has no live worker says `waiting_for_worker`. (Real worker processes fill the
table in tests/e2e; here rows are arranged the way a worker writes them, `core.workers`.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core.settings import Settings
from core.tables import WorkerRow, utcnow
from core.workers import delete_dead_workers, renew_worker
from tests.app.helpers import assert_problem, create_mixture


def _worker(session: Session, name: str, queues: list[str], device: str,
            age_seconds: float = 0.0, job: str | None = None) -> None:
    renew_worker(session, name=name, hostname="host", pid=1, queues=queues, device=device,
                 current_job_id=job, started_at=utcnow())
    session.flush()
    if age_seconds:
        session.get(WorkerRow, name).heartbeat_at = utcnow() - timedelta(seconds=age_seconds)
    session.commit()


@pytest.fixture
def dataset(api: TestClient) -> dict[str, Any]:
    return create_mixture(api)


def test_workers_need_a_key(client: TestClient) -> None:
    assert_problem(client.get("/v1/workers"), 401)


def test_no_worker_means_every_queue_is_empty(api: TestClient, settings: Settings) -> None:
    doc = api.get("/v1/workers").json()
    assert doc["queues"] == {"gpu": [], "cpu": []}
    assert doc["lease_seconds"] == settings.lease_seconds


def test_live_workers_are_listed_per_queue_with_their_device(
        api: TestClient, session: Session, settings: Settings) -> None:
    _worker(session, "gpu-box.1.a", ["gpu", "cpu"], "cuda (NVIDIA H200)", job="job_x")
    _worker(session, "cpu-box.2.b", ["cpu"], "cpu")
    _worker(session, "dead.3.c", ["gpu", "cpu"], "cuda (A100)",
            age_seconds=settings.lease_seconds + 5)
    doc = api.get("/v1/workers").json()
    gpu = [(w["name"], w["device"], w["state"]) for w in doc["queues"]["gpu"]]
    cpu = sorted(w["name"] for w in doc["queues"]["cpu"])
    assert gpu == [("gpu-box.1.a", "cuda (NVIDIA H200)", "busy")]
    assert cpu == ["cpu-box.2.b", "gpu-box.1.a"]
    assert "job_x" not in str(doc)  # which job a worker runs is not every owner's business


def test_queued_job_says_whether_a_worker_listens_on_its_queue(
        api: TestClient, session: Session, dataset: dict[str, Any], settings: Settings) -> None:
    on_gpu = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"],
                                        "queue": "gpu"}).json()
    on_cpu = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"],
                                        "queue": "cpu"}).json()
    assert on_gpu["progress"]["phase"] == "waiting_for_worker"
    _worker(session, "cpu-box.2.b", ["cpu"], "cpu")
    _worker(session, "dead-gpu.3.c", ["gpu"], "cuda (A100)",
            age_seconds=settings.lease_seconds + 5)
    assert api.get(f"/v1/jobs/{on_gpu['id']}").json()["progress"]["phase"] == \
        "waiting_for_worker"
    assert api.get(f"/v1/jobs/{on_cpu['id']}").json()["progress"]["phase"] == "queued"
    listed = {j["id"]: j["progress"]["phase"] for j in api.get("/v1/jobs").json()["items"]}
    assert listed == {on_gpu["id"]: "waiting_for_worker", on_cpu["id"]: "queued"}


def test_long_dead_workers_are_forgotten(session: Session, settings: Settings) -> None:
    _worker(session, "old.1.a", ["cpu"], "cpu", age_seconds=settings.lease_seconds + 7200)
    _worker(session, "recent.2.b", ["cpu"], "cpu", age_seconds=settings.lease_seconds + 5)
    assert delete_dead_workers(session, settings.lease_seconds) == 1
    session.commit()
    assert session.get(WorkerRow, "old.1.a") is None
    assert session.get(WorkerRow, "recent.2.b") is not None
