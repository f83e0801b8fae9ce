"""Hostile and extreme input (issue 10): each case gets a 4xx problem document, stores nothing
(rows and blobs unchanged) and is answered in bounded time (the per-test timeout); on SQLite and
PostgreSQL."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.helpers import MIXTURE, assert_problem, create_mixture, npy_bytes, npz_bytes, upload

State = Callable[[], dict[str, Any]]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dataset(api: TestClient) -> dict[str, Any]:
    return create_mixture(api, n_samples=200)


def _refused(r: Any, state: State, before: dict[str, Any], status: int,
             field: str | None = None) -> dict[str, Any]:
    doc = assert_problem(r, status, field)
    assert state() == before, "a refused request changed stored state"
    return doc


def _train(dataset: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"type": "train", "dataset_id": dataset["id"], **sections}


# ---- network size ----
@pytest.mark.parametrize(("network", "field", "setting"), [
    ({"width": 10**9}, "network", "MAX_NETWORK_PARAMETERS"),
    ({"fourier_features": 10**9}, "network", "MAX_NETWORK_PARAMETERS"),
    ({"hidden_widths": [8] * 100_000}, "network.hidden_widths", "MAX_NETWORK_LAYERS"),
    ({"num_classes": 10**9}, "network.num_classes", None),  # no labels: refused before counting
], ids=["width", "fourier_features", "layers", "num_classes"])
def test_oversized_networks_are_422_naming_the_cap(api: TestClient, dataset: dict[str, Any],
                                                   state: State, network: dict[str, Any],
                                                   field: str, setting: str | None) -> None:
    before = state()
    doc = _refused(api.post("/v1/jobs", json=_train(dataset, network=network)), state, before,
                   422, field)
    if setting is not None:
        assert doc["limit_setting"] == setting and setting in doc["detail"]


@pytest.mark.parametrize("value", ["100", True, 1.5, None, [1]], ids=repr)
def test_network_overrides_keep_their_json_type(api: TestClient, dataset: dict[str, Any],
                                                state: State, value: Any) -> None:
    before = state()
    _refused(api.post("/v1/jobs", json=_train(dataset, network={"width": value})), state, before,
             422, "network.width")


# ---- strict numbers, finite floats ----
@pytest.mark.parametrize(("section", "value", "field"), [
    ({"training": {"epochs": "100"}}, None, "training.epochs"),
    ({"training": {"epochs": True}}, None, "training.epochs"),
    ({"training": {"epochs": 2.0}}, None, "training.epochs"),
    ({"training": {"lr": "0.001"}}, None, "training.lr"),
    ({"measurement": {"seed": 2**32}}, None, "measurement.seed"),
    ({"training": {"seed": 2**64}}, None, "training.seed"),
    ({"subset_seed": -1}, None, "subset_seed"),
], ids=["epochs-string", "epochs-bool", "epochs-float", "lr-string", "seed-2^32", "seed-2^64",
        "subset-seed-negative"])
def test_strict_types_and_seed_range(api: TestClient, dataset: dict[str, Any], state: State,
                                     section: dict[str, Any], value: Any, field: str) -> None:
    before = state()
    _refused(api.post("/v1/jobs", json=_train(dataset, **section)), state, before, 422, field)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_json_numbers_are_422(api: TestClient, dataset: dict[str, Any], state: State,
                                         literal: str) -> None:
    before = state()
    body = (f'{{"type": "train", "dataset_id": "{dataset["id"]}", '
            f'"process": {{"kind": "vp", "beta_max": {literal}}}}}')
    r = api.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    _refused(r, state, before, 422)
    r = api.post("/v1/datasets", content=f'{{"kind": "gaussian_mixture", "box": {literal}}}',
                 headers={"Content-Type": "application/json"})
    _refused(r, state, before, 422)


def test_json_body_over_the_cap_is_413(api: TestClient, state: State) -> None:
    before = state()
    big = json.dumps({**MIXTURE, "name": "x" * 10, "means": [[0.0] * 1000] * 1000})
    assert len(big) > 4 * 1024 * 1024
    r = api.post("/v1/datasets", content=big, headers={"Content-Type": "application/json"})
    _refused(r, state, before, 413)


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    r = client.request("OPTIONS", "/v1/datasets")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    r = client.put("/v1/datasets/ds_x")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}


# ---- NUL bytes ----
def test_nul_in_path_and_query_is_400(api: TestClient, state: State) -> None:
    before = state()
    _refused(api.get("/v1/jobs/job_%00x"), state, before, 400)
    _refused(api.get("/v1/datasets/ds_%00"), state, before, 400)
    _refused(api.get("/v1/jobs?status=%00"), state, before, 400)


def test_nul_in_a_json_string_is_422(api: TestClient, dataset: dict[str, Any],
                                     state: State) -> None:
    before = state()
    _refused(api.post("/v1/jobs", json={"type": "train", "dataset_id": "ds_\x00"}), state,
             before, 422, "dataset_id")
    _refused(api.post("/v1/datasets", json={**MIXTURE, "name": "a\x00b"}), state, before, 422,
             "name")


def test_nul_in_a_form_field_is_4xx(api: TestClient, state: State) -> None:
    before = state()
    r = upload(api, npy_bytes(np.zeros((10, 2), np.float32)), form={"name": "a\x00b"})
    assert 400 <= r.status_code < 500, r.text
    assert state() == before


# ---- list offsets ----
@pytest.mark.parametrize("offset", [10**9 + 1, 2**63, -1])
def test_list_offset_out_of_range_is_422(api: TestClient, offset: int) -> None:
    for path in ("/v1/jobs", "/v1/datasets", "/v1/checkpoints", "/v1/sweeps"):
        assert_problem(api.get(path, params={"offset": offset}), 422, "offset")


# ---- data sets ----
@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "gaussian_mixture", "box": 1e308}, "box"),
    ({**MIXTURE, "means": [[3.5e38, 0.0], [0.0, 0.0]]}, "means"),
    ({**MIXTURE, "stds": [[1e39, 1.0], [1.0, 1.0]]}, "stds"),
    ({**MIXTURE, "weights": [0.5, 0.6]}, "weights"),
    ({"kind": "gaussian_mixture", "n_components": 1000, "dim": 1000}, "n_components"),
    ({**MIXTURE, "seed": 2**64}, "seed"),
    ({**MIXTURE, "split_seed": 2**64}, "split_seed"),
    ({**MIXTURE, "n_samples": "100"}, "n_samples"),
    ({**MIXTURE, "n_samples": True}, "n_samples"),
], ids=["box-1e308", "means-3.5e38", "stds-1e39", "weights-not-1", "K-x-D", "seed-2^64",
        "split-seed-2^64", "n-samples-string", "n-samples-bool"])
def test_bad_mixtures_are_422(api: TestClient, state: State, body: dict[str, Any],
                              field: str) -> None:
    before = state()
    _refused(api.post("/v1/datasets", json=body), state, before, 422, field)


def test_float64_upload_beyond_float32_is_422(api: TestClient, state: State) -> None:
    before = state()
    x = np.ones((20, 2), np.float64)
    x[3, 1] = 1e308
    _refused(upload(api, npy_bytes(x)), state, before, 422, "x")


def test_compressed_npz_that_decodes_beyond_the_upload_cap_is_refused_from_its_header(
        api: TestClient, state: State) -> None:
    """A few KB of zeros declaring 10^8 float32 numbers (400 MB > MAX_UPLOAD_BYTES)."""
    before = state()
    blob = npz_bytes(compress=True, x=np.zeros((10**8 // 100, 100), np.float32))
    assert len(blob) < 1_000_000
    doc = _refused(upload(api, blob, "x.npz"), state, before, 422, "x")
    assert "MAX_UPLOAD_BYTES" in doc["detail"]


def test_labels_beyond_an_integer_column_are_422(api: TestClient, state: State) -> None:
    before = state()
    blob = npz_bytes(x=np.zeros((10, 2), np.float32),
                     labels=np.array([0] * 9 + [2**31 - 1], np.int64))
    _refused(upload(api, blob, "x.npz"), state, before, 422, "labels")


def test_dataset_lists_never_embed_mixture_parameters(api: TestClient) -> None:
    ds = create_mixture(api)
    item = api.get("/v1/datasets").json()["items"][0]
    assert item["id"] == ds["id"]
    assert not {"weights", "means", "stds"} & set(item["mixture"])
    assert item["mixture"]["n_components"] == 2 and item["mixture"]["dim"] == 2
    assert api.get(f"/v1/datasets/{ds['id']}").json()["mixture"]["means"] == MIXTURE["means"]


# ---- sample jobs ----
def test_sample_labels_beyond_an_integer_are_422(api: TestClient, state: State) -> None:
    before = state()
    r = api.post("/v1/jobs", json={"type": "sample", "checkpoint_id": "ckpt_x", "n": 1,
                                   "labels": [2**31 - 1]})
    _refused(r, state, before, 422, "labels.0")


# ---- checkpoints ----
def _safetensors(n_tensors: int, config: dict[str, Any]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"neural_entropy": json.dumps(config)}}
    for i in range(n_tensors):
        header[f"t{i}"] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * n_tensors)


def _mlp_config(**network: Any) -> dict[str, Any]:
    return {"format_version": 1, "event_shape": [2], "num_classes": None,
            "parametrization": "entropy_matching", "process": {"kind": "vp"},
            "network": {"arch": "mlp", "dim": 2, **network}}


def _upload_checkpoint(api: TestClient, blob: bytes) -> Any:
    return api.post("/v1/checkpoints",
                    files={"file": ("m.safetensors", io.BytesIO(blob), "application/octet-stream")})


def test_checkpoint_with_too_many_tensors_is_refused_from_its_header(api: TestClient,
                                                                     state: State) -> None:
    before = state()
    doc = _refused(_upload_checkpoint(api, _safetensors(20_000, _mlp_config())), state, before,
                   422, "file")
    assert doc["limit_setting"] == "MAX_CHECKPOINT_TENSORS"


def test_checkpoint_whose_metadata_lists_20000_layers_is_refused_before_building(
        api: TestClient, state: State) -> None:
    before = state()
    blob = _safetensors(4, _mlp_config(hidden_widths=[8] * 20_000))
    doc = _refused(_upload_checkpoint(api, blob), state, before, 422)
    assert doc["limit_setting"] == "MAX_NETWORK_LAYERS"
