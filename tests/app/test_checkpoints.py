"""/v1/checkpoints over HTTP (SQLite and PostgreSQL): upload, list, get, download, delete.

Every bad file is refused with a 4xx problem document and leaves the database and the artifact
store exactly as they were; another owner gets 404 for everything.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import struct
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as st_save
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.main import create_app
from core.settings import Settings
from core.tables import Checkpoint, Job, JobStatus
from models.checkpoints.io import METADATA_KEY, CheckpointConfig, read_checkpoint, write_checkpoint
from models.networks import MLPConfig, build_network
from tests.app.helpers import assert_problem

SMALL_MLP = {"arch": "mlp", "dim": 2, "fourier_features": 8, "width": 16,
             "hidden_widths": [16, 8], "seed": 0}
CONFIG = {"network": SMALL_MLP, "process": {"kind": "vp"}, "event_shape": [2],
          "provenance": {"source": "test"}}


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    net = build_network(MLPConfig(**{k: v for k, v in SMALL_MLP.items() if k != "arch"}))
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def good(state_dict: dict[str, torch.Tensor]) -> bytes:
    return write_checkpoint(state_dict, CheckpointConfig.from_dict(CONFIG))


def post(api: TestClient, data: bytes, config: Any = None, **form: str) -> Any:
    fields = dict(form)
    if config is not None:
        fields["config"] = config if isinstance(config, str) else json.dumps(config)
    return api.post("/v1/checkpoints",
                    files={"file": ("model.safetensors", data, "application/octet-stream")},
                    data=fields)


def created(api: TestClient, data: bytes, config: Any = None) -> dict[str, Any]:
    r = post(api, data, config)
    assert r.status_code == 201, r.text
    return r.json()


# ---- happy paths ----
def test_upload_answers_201_with_location_and_document(api: TestClient, good: bytes) -> None:
    r = post(api, good)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"] == f"/v1/checkpoints/{doc['id']}"
    assert doc["id"].startswith("ckpt_") and doc["source"] == "upload"
    assert doc["job_id"] is None and doc["epoch"] is None and doc["created_at"]
    assert doc["parametrization"] == "entropy_matching" and doc["arch"] == "mlp"
    assert doc["event_shape"] == [2] and doc["num_classes"] is None
    assert doc["config"] == CheckpointConfig.from_dict(CONFIG).to_dict()
    assert doc["size_bytes"] == len(good) and doc["sha256"] == hashlib.sha256(good).hexdigest()
    got = api.get(r.headers["location"])
    assert got.status_code == 200 and got.json() == doc


def test_download_returns_the_file_with_its_config(api: TestClient, good: bytes,
                                                   state_dict: dict[str, torch.Tensor]) -> None:
    doc = created(api, good, {"parametrization": "noise", "provenance": {"epoch": 3}})
    r = api.get(doc["download_url"])
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == doc["sha256"] == r.headers["x-content-sha256"]
    assert "attachment" in r.headers["content-disposition"]
    config, tensors = read_checkpoint(r.content)
    assert config.to_dict() == doc["config"]
    assert config.parametrization == "noise" and config.provenance == {"source": "test", "epoch": 3}
    assert all(torch.equal(tensors[k], v) for k, v in state_dict.items())


def test_download_then_upload_gives_the_same_file(api: TestClient, good: bytes) -> None:
    first = created(api, good)
    again = created(api, api.get(first["download_url"]).content)
    assert again["id"] != first["id"] and again["sha256"] == first["sha256"]


def test_file_without_metadata_is_accepted_with_a_config_field(
        api: TestClient, state_dict: dict[str, torch.Tensor]) -> None:
    doc = created(api, st_save(state_dict), CONFIG)
    assert doc["config"]["network"]["width"] == 16
    config, _ = read_checkpoint(api.get(doc["download_url"]).content)  # config now in the file
    assert config.to_dict() == doc["config"]


def test_list_is_paginated_newest_first(api: TestClient, good: bytes) -> None:
    ids = [created(api, good)["id"] for _ in range(3)]
    page = api.get("/v1/checkpoints", params={"limit": 2}).json()
    assert page["total"] == 3 and page["next_offset"] == 2
    assert [c["id"] for c in page["items"]] == ids[::-1][:2]
    rest = api.get("/v1/checkpoints", params={"limit": 2, "offset": 2}).json()
    assert [c["id"] for c in rest["items"]] == ids[:1] and rest["next_offset"] is None
    assert api.get("/v1/checkpoints", params={"source": "training"}).json()["total"] == 0


def small_mlp_config(process: dict[str, Any], provenance: dict[str, Any]) -> CheckpointConfig:
    """The config a train job writes for SMALL_MLP on 2-D data."""
    return CheckpointConfig.from_dict({
        "network": SMALL_MLP, "process": process, "event_shape": [2],
        "parametrization": "entropy_matching", "value_range": None, "num_classes": None,
        "provenance": provenance})


def test_training_checkpoints_are_listed_and_downloadable(
        api: TestClient, session: Session, owner_key: tuple[str, str],
        state_dict: dict[str, torch.Tensor]) -> None:
    from worker.checkpoints import store_checkpoint

    net = build_network(MLPConfig(**{k: v for k, v in SMALL_MLP.items() if k != "arch"}))
    config = small_mlp_config({"kind": "sl"}, {"source": "training", "job_id": "job_x", "epoch": 5})
    row = store_checkpoint(session, net, config, owner_id=owner_key[0], job_id="job_x", epoch=5)
    session.commit()
    page = api.get("/v1/checkpoints", params={"source": "training", "job_id": "job_x"}).json()
    assert [c["id"] for c in page["items"]] == [row.id]
    doc = page["items"][0]
    assert doc["source"] == "training" and doc["job_id"] == "job_x" and doc["epoch"] == 5
    read_config, tensors = read_checkpoint(api.get(doc["download_url"]).content)
    assert read_config.process == {"kind": "sl", "sigma0": 0.1}
    assert all(torch.equal(tensors[k], v) for k, v in net.state_dict().items())


# ---- delete ----
def test_delete_removes_the_blob_when_nothing_else_uses_it(
        api: TestClient, good: bytes, state: Callable[[], dict[str, Any]]) -> None:
    before = state()
    a, b = created(api, good), created(api, good)
    assert len(state()["blobs"]) == len(before["blobs"]) + 1  # one blob, shared
    assert api.delete(f"/v1/checkpoints/{a['id']}").status_code == 204
    assert_problem(api.get(f"/v1/checkpoints/{a['id']}"), 404)
    assert len(state()["blobs"]) == len(before["blobs"]) + 1  # b still uses it
    assert api.get(b["download_url"]).status_code == 200
    assert api.delete(f"/v1/checkpoints/{b['id']}").status_code == 204
    assert state() == before


def test_delete_is_refused_while_a_job_uses_the_checkpoint(
        api: TestClient, good: bytes, session: Session, owner_key: tuple[str, str]) -> None:
    doc = created(api, good)
    job = Job(owner_id=owner_key[0], type="measure", status=JobStatus.running.value,
              input_checkpoint_id=doc["id"], request={"type": "measure"})
    session.add(job)
    session.commit()
    problem = assert_problem(api.delete(f"/v1/checkpoints/{doc['id']}"), 409)
    assert job.id in problem["detail"]
    assert api.get(doc["download_url"]).status_code == 200
    job.status = JobStatus.succeeded.value
    session.commit()
    assert api.delete(f"/v1/checkpoints/{doc['id']}").status_code == 204
    session.expire_all()
    assert session.get(Job, job.id).input_checkpoint_id is None  # the finished job loses the link


# ---- owners ----
def test_another_owner_gets_404(api: TestClient, good: bytes,
                                other_headers: dict[str, str]) -> None:
    doc = created(api, good)
    for method, path in (("get", f"/v1/checkpoints/{doc['id']}"), ("get", doc["download_url"]),
                         ("delete", f"/v1/checkpoints/{doc['id']}")):
        assert_problem(getattr(api, method)(path, headers=other_headers), 404)
    assert api.get("/v1/checkpoints", headers=other_headers).json()["total"] == 0
    assert api.get(f"/v1/checkpoints/{doc['id']}").status_code == 200  # still there


def test_missing_key_gets_401(client: TestClient, good: bytes) -> None:
    assert_problem(post(client, good), 401)
    assert_problem(client.get("/v1/checkpoints"), 401)


# ---- bad files: each refused with a 4xx, nothing stored ----
def _torch_zip(sd: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _with_prefix(good: bytes, n: int) -> bytes:
    return struct.pack("<Q", n) + good[8:]


def _header_len(good: bytes) -> int:
    return struct.unpack("<Q", good[:8])[0]


def _raw(header: dict[str, Any], data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


BAD_FILES: dict[str, tuple[Callable[[bytes, dict[str, torch.Tensor]], bytes], int, str]] = {
    "pickle": (lambda g, sd: pickle.dumps({"w": [1.0]}), 415, "pickle"),
    "torch_save_zip": (lambda g, sd: _torch_zip(sd), 415, "zip"),
    "truncated": (lambda g, sd: g[:-5], 422, "truncated"),
    "cut_in_header": (lambda g, sd: g[:30], 422, "header claims"),
    "header_length_lies": (lambda g, sd: _with_prefix(g, _header_len(g) + 10_000), 422,
                           "header claims"),
    "header_length_short": (lambda g, sd: _with_prefix(g, _header_len(g) - 9), 422,
                            "not valid JSON"),
    "offsets_past_end": (lambda g, sd: _raw(
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), 422,
        "past the end"),
    "offsets_overlap": (lambda g, sd: _raw(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), 422,
        "overlaps"),
    "shape_size_mismatch": (lambda g, sd: _raw(
        {"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, b"\0" * 16), 422,
        "needs 20 bytes"),
    "metadata_not_json": (lambda g, sd: st_save(sd, metadata={METADATA_KEY: "{oops"}), 422,
                          "not valid JSON"),
    "missing_metadata": (lambda g, sd: st_save(sd), 422, "metadata"),
    "empty": (lambda g, sd: b"", 422, "too short"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_refused_and_nothing_is_stored(
        api: TestClient, good: bytes, state_dict: dict[str, torch.Tensor], kind: str,
        state: Callable[[], dict[str, Any]]) -> None:
    make, status, words = BAD_FILES[kind]
    before = state()
    problem = assert_problem(post(api, make(good, state_dict)), status, "file")
    assert words.lower() in problem["detail"].lower()
    assert state() == before


def test_wrong_tensors_get_422_listing_them(api: TestClient, state_dict: dict[str, torch.Tensor],
                                            state: Callable[[], dict[str, Any]]) -> None:
    sd = dict(state_dict)
    sd["out.weight"] = torch.zeros(5, 8)
    del sd["out.bias"]
    before = state()
    data = st_save(sd, metadata={METADATA_KEY: CheckpointConfig.from_dict(CONFIG).to_json()})
    problem = assert_problem(post(api, data), 422, "file")
    assert problem["reason"] == "architecture_mismatch"
    assert {(t["name"], t["problem"]) for t in problem["offending_tensors"]} == {
        ("out.bias", "missing"), ("out.weight", "wrong shape")}
    assert "out.weight" in problem["detail"] and state() == before


@pytest.mark.parametrize(("config", "field"), [
    ("{not json", "config"),
    ("[1, 2]", "config"),
    ({"parametrization": "velocity"}, "config.parametrization"),
    ({"event_shape": [3]}, "config.event_shape"),
    ({"process": {"kind": "vp", "kappa": -1}}, "config.process"),
])
def test_bad_config_field_gets_422_naming_it(api: TestClient, good: bytes, config: Any,
                                             field: str,
                                             state: Callable[[], dict[str, Any]]) -> None:
    before = state()
    assert_problem(post(api, good, config), 422, field)
    assert state() == before


def test_unknown_form_field_and_missing_file_get_422(api: TestClient, good: bytes) -> None:
    assert_problem(post(api, good, colour="blue"), 422, "colour")
    r = api.post("/v1/checkpoints", data={"config": "{}"}, files={"other": ("x", b"1")})
    assert r.status_code == 422 and "Traceback" not in r.text


def test_json_body_gets_415(api: TestClient) -> None:
    assert_problem(api.post("/v1/checkpoints", json=CONFIG), 415)


def test_oversized_upload_gets_413_and_nothing_is_stored(
        settings: Settings, owner_key: tuple[str, str], good: bytes,
        state: Callable[[], dict[str, Any]]) -> None:
    small = settings.model_copy(update={"max_upload_bytes": len(good) // 2})
    before = state()
    with TestClient(create_app(small), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        problem = assert_problem(post(c, good), 413)
    assert problem["limit"] == len(good) // 2
    assert state() == before


def test_nothing_is_left_in_the_database_after_refusals(api: TestClient, session: Session,
                                                        good: bytes) -> None:
    post(api, pickle.dumps([1]))
    post(api, good[:-1])
    assert session.scalars(select(Checkpoint)).all() == []


def test_openapi_documents_the_upload(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/checkpoints", "/v1/checkpoints/{checkpoint_id}",
            "/v1/checkpoints/{checkpoint_id}/download"} <= set(paths)
    body = paths["/v1/checkpoints"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(body["schema"]["properties"]) == {"file", "config"}
    assert {"201", "413", "415", "422"} <= set(paths["/v1/checkpoints"]["post"]["responses"])


# ---- measuring uploaded checkpoints (the worker's job body, run in this process) ----
def _measure(api: TestClient, checkpoint_id: str, dataset_id: str) -> dict[str, Any]:
    from worker.jobs import run_job

    r = api.post("/v1/jobs", json={"type": "measure", "checkpoint_id": checkpoint_id,
                                   "dataset_id": dataset_id,
                                   "measurement": {"n_times": 16, "n_samples": 4096, "seed": 7}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert run_job(job_id) == "succeeded", api.get(f"/v1/jobs/{job_id}").json()["error"]
    job = api.get(f"/v1/jobs/{job_id}").json()
    return api.get(f"/v1/measurements/{job['measurement_id']}").json()


def test_downloaded_training_checkpoint_reuploaded_measures_bit_for_bit(
        api: TestClient, session: Session, owner_key: tuple[str, str], tmp_path: Any) -> None:
    from tests.app.helpers import create_mixture
    from worker.checkpoints import store_checkpoint

    dataset = create_mixture(api)
    net = build_network(MLPConfig(**{k: v for k, v in SMALL_MLP.items() if k != "arch"}))
    config = small_mlp_config({"kind": "vp"}, {"epoch": 1})
    trained = store_checkpoint(session, net, config, owner_id=owner_key[0], job_id=None, epoch=1)
    session.commit()
    uploaded = created(api, api.get(f"/v1/checkpoints/{trained.id}/download").content)
    a = _measure(api, trained.id, dataset["id"])
    b = _measure(api, uploaded["id"], dataset["id"])
    assert math.isfinite(a["neural_entropy"]["nats"])
    assert b["neural_entropy"] == a["neural_entropy"]  # bit for bit on CPU

    example = _export_example()
    path = tmp_path / "mine.safetensors"
    example.main(str(path))
    exported = created(api, path.read_bytes())
    assert math.isfinite(_measure(api, exported["id"], dataset["id"])["neural_entropy"]["nats"])


def _export_example() -> Any:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("export_checkpoint",
                                                  root / "examples" / "export_checkpoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
