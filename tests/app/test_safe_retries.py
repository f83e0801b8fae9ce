"""Safe retries and bounded queues (issue 10): `Idempotency-Key` on POSTs returns the first
result, the per-owner cap on queued submissions answers 429 + Retry-After (a sweep counts once),
and key management from the command line (a revoked key gets 401 at once)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.main import create_app
from core.settings import Settings
from core.tables import Dataset, IdempotencyKey, Job
from tests.app.helpers import MIXTURE, assert_problem, create_mixture, npy_bytes, upload

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def dataset(api: TestClient) -> dict[str, Any]:
    return create_mixture(api, n_samples=200)


def _count(session: Session, table: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(table)) or 0)


# ---- Idempotency-Key ----
def test_a_retried_job_submission_returns_the_first_job(api: TestClient, session: Session,
                                                        dataset: dict[str, Any]) -> None:
    body = {"type": "train", "dataset_id": dataset["id"], "training": {"epochs": 2}}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(session, Job) == 1
    other = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"] and _count(session, Job) == 2


def test_the_same_key_for_another_body_is_422(api: TestClient, session: Session,
                                              dataset: dict[str, Any]) -> None:
    body = {"type": "train", "dataset_id": dataset["id"]}
    assert api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k"}).status_code == 202
    r = api.post("/v1/jobs", json={**body, "training": {"epochs": 3}},
                 headers={"Idempotency-Key": "k"})
    assert_problem(r, 422, "Idempotency-Key")
    assert_problem(api.post("/v1/datasets", json=MIXTURE, headers={"Idempotency-Key": "k"}),
                   422, "Idempotency-Key")
    assert _count(session, Job) == 1


def test_keys_are_per_owner(api: TestClient, session: Session, dataset: dict[str, Any],
                            other_headers: dict[str, str]) -> None:
    mine = api.post("/v1/datasets", json=MIXTURE, headers={"Idempotency-Key": "same"})
    theirs = api.post("/v1/datasets", json=MIXTURE,
                      headers={**other_headers, "Idempotency-Key": "same"})
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


def test_concurrent_first_requests_with_one_key_create_one_job(
        settings: Settings, owner_key: tuple[str, str], session: Session) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        ds = create_mixture(c, n_samples=200)
        body = {"type": "train", "dataset_id": ds["id"]}

        def post(_: int) -> Any:
            return c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(8)))
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert _count(session, Job) == 1 and _count(session, IdempotencyKey) == 1


def test_retried_upload_returns_the_first_dataset(api: TestClient, session: Session) -> None:
    data = npy_bytes(np.zeros((10, 2), np.float32))
    first = upload(api, data, headers={"Idempotency-Key": "up"})
    again = upload(api, data, headers={"Idempotency-Key": "up"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"] and _count(session, Dataset) == 1
    assert_problem(upload(api, npy_bytes(np.ones((10, 2), np.float32)),
                          headers={"Idempotency-Key": "up"}), 422, "Idempotency-Key")


def test_a_key_whose_resource_was_deleted_creates_a_new_one(api: TestClient,
                                                            session: Session) -> None:
    first = api.post("/v1/datasets", json=MIXTURE, headers={"Idempotency-Key": "d"}).json()
    assert api.delete(f"/v1/datasets/{first['id']}").status_code == 204
    again = api.post("/v1/datasets", json=MIXTURE, headers={"Idempotency-Key": "d"})
    assert again.status_code == 201 and again.json()["id"] != first["id"]


def test_a_failed_enqueue_forgets_the_key(settings: Settings, owner_key: tuple[str, str],
                                          session: Session) -> None:
    bad = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(bad), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        ds = create_mixture(c, n_samples=200)
        r = c.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"], "queue": "cpu"},
                   headers={"Idempotency-Key": "q"})
        assert_problem(r, 503)
        assert r.headers["retry-after"]
    assert _count(session, Job) == 0 and _count(session, IdempotencyKey) == 0


@pytest.mark.parametrize("key", ["", " ", "é", "a" * 201])
def test_malformed_keys_are_422(api: TestClient, dataset: dict[str, Any], session: Session,
                                key: str) -> None:
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": dataset["id"]},
                 headers={"Idempotency-Key": key.encode("utf-8")})
    assert r.status_code == 422, r.text
    assert _count(session, Job) == 0


# ---- the queued-submission cap ----
def test_queued_cap_is_429_with_retry_after_and_a_sweep_counts_once(
        settings: Settings, owner_key: tuple[str, str], session: Session) -> None:
    capped = settings.model_copy(update={"max_queued_jobs_per_owner": 2})
    with TestClient(create_app(capped), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        ds = create_mixture(c, n_samples=200)
        sweep = c.post("/v1/sweeps", json={"base": {"dataset_id": ds["id"]},
                                           "grid": {"seed": [0, 1, 2, 3]}})
        assert sweep.status_code == 202, sweep.text
        job = c.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]})
        assert job.status_code == 202, job.text  # 4 sweep jobs + 1 = 2 submissions
        r = c.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]})
        doc = assert_problem(r, 429)
        assert int(r.headers["retry-after"]) > 0
        assert doc["limit_setting"] == "MAX_QUEUED_JOBS_PER_OWNER"
        assert_problem(c.post("/v1/sweeps", json={"base": {"dataset_id": ds["id"]}}), 429)
        assert _count(session, Job) == 5
        # a canceled job frees its place
        assert c.post(f"/v1/jobs/{job.json()['id']}/cancel").status_code == 200
        assert c.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]}).status_code \
            == 202


# ---- keys from the command line ----
def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.resolved_database_url,
           "DATA_DIR": str(settings.data_dir)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_key_lifecycle_create_list_rotate_revoke(client: TestClient, settings: Settings) -> None:
    created = _cli(settings, "create-key", "dora")
    assert created.returncode == 0, created.stderr
    (key,) = created.stdout.splitlines()
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/datasets", headers=auth).status_code == 200

    for bad in ("", "   ", "dora"):
        refused = _cli(settings, "create-key", bad)
        assert refused.returncode == 2 and refused.stdout == "" and "error" in refused.stderr

    listed = _cli(settings, "list-keys").stdout
    assert key[:12] in listed and "dora" in listed and key not in listed

    rotated = _cli(settings, "rotate-key", "dora")
    (new_key,) = rotated.stdout.splitlines()
    assert new_key != key
    assert_problem(client.get("/v1/datasets", headers=auth), 401)
    new_auth = {"Authorization": f"Bearer {new_key}"}
    assert client.get("/v1/datasets", headers=new_auth).status_code == 200

    assert _cli(settings, "revoke-key", new_key[:12]).returncode == 0
    assert_problem(client.get("/v1/datasets", headers=new_auth), 401)
    assert "revoked" in _cli(settings, "list-keys").stdout
    assert _cli(settings, "revoke-key", "ne_nope").returncode == 2
