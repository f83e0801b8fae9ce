"""Uploads and downloads through the API on both artifact stores (local directory, S3 on a real
moto server): the stored blob is what the download serves, a refused upload leaves nothing, the
API refuses to start without its bucket, and S3 downloads can be presigned redirects."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.artifacts import ArtifactStoreError
from core.settings import Settings
from models.checkpoints.io import CheckpointConfig, write_checkpoint
from models.networks import MLPConfig, build_network
from tests.app.test_checkpoints import CONFIG, SMALL_MLP
from tests.conftest import stored_blobs


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def test_upload_is_stored_and_download_streams_it_back(
        api: TestClient, settings: Settings, artifact_backend: str,
        state: Any) -> None:
    x = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    r = api.post("/v1/datasets", files={"file": ("x.npy", _npy(x))}, data={"name": "up"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert f"{doc['sha256'][:2]}/{doc['sha256']}" in stored_blobs(settings)
    # the worker-side reader gets the same canonical blob back
    from app.services.datasets import load_dataset_arrays
    from core.artifacts import get_artifact_store

    got, labels = load_dataset_arrays(get_artifact_store(settings), doc["sha256"])
    assert labels is None and got.shape == x.shape
    r = api.get(f"/v1/datasets/{doc['id']}/download")
    assert r.status_code == 200 and r.headers["x-content-sha256"] == doc["sha256"]
    assert hashlib.sha256(r.content).hexdigest() == doc["sha256"]
    with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["x"], got)

    before = state()
    r = api.post("/v1/datasets", files={"file": ("x.npy", b"not an array")})
    assert r.status_code in (415, 422)
    assert state() == before  # nothing stored, no row, no orphan blob


def test_checkpoint_download_matches_its_hash(api: TestClient, artifact_backend: str) -> None:
    r = api.post("/v1/checkpoints", files={"file": ("m.safetensors", _checkpoint_bytes())})
    assert r.status_code == 201, r.text
    doc = r.json()
    got = api.get(f"/v1/checkpoints/{doc['id']}/download")
    assert got.status_code == 200
    assert got.headers["x-content-sha256"] == doc["sha256"]
    assert int(got.headers["content-length"]) == len(got.content) == doc["size_bytes"]
    assert hashlib.sha256(got.content).hexdigest() == doc["sha256"]


def test_presigned_downloads_redirect_to_s3(settings: Settings, s3_server: str,
                                            owner_key: tuple[str, str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            artifact_backend: str) -> None:
    if artifact_backend != "s3":
        pytest.skip("presigned URLs exist only on S3")
    presigned = settings.model_copy(update={"artifact_presigned_downloads": True})
    with TestClient(create_app(presigned)) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        doc = c.post("/v1/checkpoints", files={"file": ("m.safetensors", _checkpoint_bytes())}).json()
        r = c.get(f"/v1/checkpoints/{doc['id']}/download", follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"].startswith(s3_server)
        direct = httpx.get(r.headers["location"])
        assert direct.status_code == 200
        assert hashlib.sha256(direct.content).hexdigest() == doc["sha256"]


def _checkpoint_bytes() -> bytes:
    net = build_network(MLPConfig(**{k: v for k, v in SMALL_MLP.items() if k != "arch"}))
    return write_checkpoint(net.state_dict(), CheckpointConfig.from_dict(CONFIG))


def test_api_does_not_start_without_its_bucket(s3_server: str, tmp_path: Path,
                                               database_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        artifact_url="s3://missing-bucket/x", aws_endpoint_url=s3_server)
    with pytest.raises(ArtifactStoreError, match="missing-bucket.*does not exist"):
        with TestClient(create_app(settings)):
            pass
