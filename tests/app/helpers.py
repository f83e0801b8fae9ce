"""Small builders shared by the API tests."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

MIXTURE = {"kind": "gaussian_mixture", "weights": [0.3, 0.7], "means": [[-2.0, 0.0], [2.0, 1.0]],
           "stds": [[0.5, 0.5], [1.0, 0.7]], "n_samples": 256, "seed": 0}


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(compress: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return buf.getvalue()


def zip_with_members(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload(api: TestClient, data: bytes, filename: str = "x.npy",
           form: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return api.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")},
                    data=form or {}, **kwargs)


def create_mixture(api: TestClient, **overrides: Any) -> dict[str, Any]:
    r = api.post("/v1/datasets", json={**MIXTURE, **overrides})
    assert r.status_code == 201, r.text
    return r.json()


def assert_problem(r: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """A problem+json error with this status (and naming `field`); never a stack trace."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc = r.json()
    assert doc["status"] == status and doc["title"] and doc["detail"]
    assert "Traceback" not in r.text
    if field is not None:
        assert doc.get("field") == field, doc
    return doc
