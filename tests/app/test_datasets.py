"""Mixtures, digits, list / get / delete, 409 while a job uses a data set."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.artifacts import get_artifact_store
from core.settings import Settings
from core.tables import Job, JobStatus
from models.data import GaussianMixture
from tests.app.helpers import MIXTURE, assert_problem, create_mixture, npy_bytes, upload

State = Callable[[], dict[str, Any]]


def _stored(settings: Settings, sha: str) -> bool:
    """Whether the settings' artifact store (local directory or S3) holds blob `sha`."""
    return get_artifact_store(settings).exists(sha)


def test_explicit_mixture_is_sampled_and_its_parameters_kept(api: TestClient,
                                                             settings: Settings) -> None:
    doc = create_mixture(api, n_samples=2000, seed=3)
    assert doc["kind"] == "gaussian_mixture" and doc["shape"] == [2000, 2]
    assert doc["mixture"]["weights"] == pytest.approx([0.3, 0.7])
    assert doc["mixture"]["means"] == MIXTURE["means"]
    assert doc["split"]["held_out"] == "fresh_draws" and doc["split"]["n_train"] == 2000
    blob = get_artifact_store(settings).read_bytes(doc["sha256"])
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        x = npz["x"]
    expected_mean = GaussianMixture(MIXTURE["weights"], MIXTURE["means"],
                                    MIXTURE["stds"]).mean().numpy()
    np.testing.assert_allclose(x.mean(axis=0), expected_mean, atol=0.15)


def test_same_mixture_request_gives_same_blob(api: TestClient) -> None:
    assert create_mixture(api)["sha256"] == create_mixture(api)["sha256"]
    assert create_mixture(api)["sha256"] != create_mixture(api, seed=1)["sha256"]


def test_paper_style_mixture(api: TestClient) -> None:
    r = api.post("/v1/datasets", json={"kind": "gaussian_mixture", "n_components": 5, "dim": 3,
                                       "n_samples": 100, "mixture_seed": 7})
    assert r.status_code == 201, r.text
    doc = r.json()
    expected = GaussianMixture.paper(5, 3, 4.0, 1.0, 7).to_dict()
    np.testing.assert_allclose(doc["mixture"]["means"], expected["means"])
    assert doc["mixture"]["generator"]["n_components"] == 5 and doc["dim"] == 3


def test_digits(api: TestClient) -> None:
    r = api.post("/v1/datasets", json={"kind": "digits"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["shape"] == [1797, 1, 8, 8] and doc["is_image"] and doc["num_classes"] == 10
    assert doc["value_range"] == [-1.0, 1.0]
    assert doc["split"]["n_test"] + doc["split"]["n_train"] == 1797 and doc["split"]["n_test"] > 0


@pytest.mark.parametrize("body, field", [
    ({**MIXTURE, "weights": None}, "weights"),
    ({**MIXTURE, "stds": [[0.5, -1.0], [1.0, 1.0]]}, "means"),
    ({**MIXTURE, "means": [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]}, "means"),
    ({**MIXTURE, "n_components": 3}, "n_components"),
    ({**MIXTURE, "n_samples": 0}, "n_samples"),
    ({**MIXTURE, "colour": "red"}, "colour"),
    ({"kind": "imagenet"}, "kind"),
    ({"name": "no kind"}, "kind"),
])
def test_bad_mixture_requests_are_422(api: TestClient, state: State, body: dict[str, Any],
                                      field: str) -> None:
    before = state()
    assert_problem(api.post("/v1/datasets", json=body), 422, field)
    assert state() == before


def test_n_samples_over_the_cap_is_422_naming_it(api: TestClient, settings: Settings) -> None:
    r = api.post("/v1/datasets", json={**MIXTURE, "n_samples": settings.max_n_samples + 1})
    doc = assert_problem(r, 422, "n_samples")
    assert doc["limit_setting"] == "MAX_N_SAMPLES" and doc["limit"] == settings.max_n_samples


def test_malformed_json_is_422(api: TestClient) -> None:
    r = api.post("/v1/datasets", content=b"{not json",
                 headers={"content-type": "application/json"})
    assert_problem(r, 422)


def test_list_is_paginated_newest_first(api: TestClient) -> None:
    ids = [create_mixture(api, seed=i)["id"] for i in range(5)]
    page = api.get("/v1/datasets", params={"limit": 2}).json()
    assert page["total"] == 5 and page["next_offset"] == 2
    assert [d["id"] for d in page["items"]] == ids[::-1][:2]
    last = api.get("/v1/datasets", params={"limit": 2, "offset": 4}).json()
    assert [d["id"] for d in last["items"]] == ids[:1] and last["next_offset"] is None
    assert_problem(api.get("/v1/datasets", params={"limit": 0}), 422, "limit")


def test_get_and_unknown_id(api: TestClient) -> None:
    doc = create_mixture(api)
    assert api.get(f"/v1/datasets/{doc['id']}").json() == doc
    assert_problem(api.get("/v1/datasets/ds_nope"), 404)


def test_delete_removes_row_and_unreferenced_blob(api: TestClient, settings: Settings,
                                                  state: State) -> None:
    a = upload(api, npy_bytes(np.eye(3))).json()
    b = upload(api, npy_bytes(np.eye(3))).json()  # same blob
    assert api.delete(f"/v1/datasets/{a['id']}").status_code == 204
    assert _stored(settings, a["sha256"])  # b still uses it
    assert api.delete(f"/v1/datasets/{b['id']}").status_code == 204
    assert not _stored(settings, b["sha256"])
    assert state()["artifacts"] == 0 and state()["datasets"] == 0
    assert_problem(api.get(f"/v1/datasets/{a['id']}"), 404)
    assert_problem(api.delete(f"/v1/datasets/{a['id']}"), 404)


def test_delete_is_409_while_a_job_uses_it(api: TestClient, session: Session,
                                           settings: Settings) -> None:
    ds = create_mixture(api)
    job = api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]}).json()
    doc = assert_problem(api.delete(f"/v1/datasets/{ds['id']}"), 409)
    assert doc["jobs"] == [job["id"]]
    assert _stored(settings, ds["sha256"])
    row = session.get(Job, job["id"])
    assert row is not None
    row.status = JobStatus.succeeded.value
    session.commit()
    assert api.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    session.expire_all()
    kept = session.scalars(select(Job).where(Job.id == job["id"])).one()
    assert kept.dataset_id is None and kept.request["dataset_id"] == ds["id"]
