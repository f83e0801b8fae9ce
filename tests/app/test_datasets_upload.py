"""Uploads: good .npy/.npz are stored canonically; every bad file gets 4xx and changes nothing."""

from __future__ import annotations

import asyncio
import io
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from app.errors import ProblemError
from app.main import create_app
from app.services.uploads import receive_multipart
from core.artifacts import get_artifact_store
from core.settings import Settings
from tests.app.helpers import assert_problem, npy_bytes, npz_bytes, upload, zip_with_members

State = Callable[[], dict[str, Any]]


def test_good_npy_vectors_are_stored(api: TestClient, settings: Settings) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64)
    r = upload(api, npy_bytes(x), form={"name": "vecs", "test_fraction": "0.2"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"] == f"/v1/datasets/{doc['id']}"
    assert doc["shape"] == [50, 3] and doc["dim"] == 3 and doc["dtype"] == "float32"
    assert doc["source_dtype"] == "<f8" and doc["is_image"] is False
    assert doc["split"] == {"test_fraction": 0.2, "seed": 0, "n_train": 40, "n_test": 10,
                            "held_out": "split"}
    blob = get_artifact_store(settings).read_bytes(doc["sha256"])
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["x"], x.astype(np.float32))
        assert "labels" not in npz.files


def test_good_npz_images_with_labels_are_scaled(api: TestClient, settings: Settings) -> None:
    x = np.random.default_rng(1).integers(0, 256, size=(20, 6, 6, 3), dtype=np.uint8)
    labels = np.arange(20) % 4
    r = upload(api, npz_bytes(compress=True, x=x, labels=labels), "imgs.npz",
               form={"layout": "nhwc"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["shape"] == [20, 3, 6, 6] and doc["is_image"] and doc["num_classes"] == 4
    assert doc["value_range"] == [-1.0, 1.0] and doc["has_labels"]
    blob = get_artifact_store(settings).read_bytes(doc["sha256"])
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        expected = np.transpose(x, (0, 3, 1, 2)) / 255.0 * 2 - 1
        np.testing.assert_allclose(npz["x"], expected, atol=1e-6)
        np.testing.assert_array_equal(npz["labels"], labels)


def test_same_data_twice_shares_one_blob(api: TestClient, state: State) -> None:
    data = npy_bytes(np.ones((10, 2)) * np.arange(2))
    a, b = upload(api, data).json(), upload(api, data).json()
    assert a["id"] != b["id"] and a["sha256"] == b["sha256"]
    assert state()["artifacts"] == 1


def test_value_range_form_fields_set_the_scaling(api: TestClient) -> None:
    x = np.full((4, 2, 2), 5.0)
    r = upload(api, npy_bytes(x), form={"value_min": "0", "value_max": "10"})
    assert r.status_code == 201, r.text
    assert r.json()["value_range"] == [-1.0, 1.0]
    assert r.json()["scaling"]["value_range_in"] == [0.0, 10.0]


def _object_npy() -> bytes:
    return npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _truncated_npy() -> bytes:
    return npy_bytes(np.zeros((100, 2)))[:-16]


def _lying_npz_member() -> bytes:
    good = npy_bytes(np.zeros((10, 2)))
    header_end = good.index(b"\n") + 1
    header = good[:header_end].replace(b"(10, 2)", b"(99, 2)")  # same length header
    return zip_with_members({"x.npy": header + good[header_end:]})


BAD_FILES: dict[str, tuple[Callable[[], bytes], str, str | None]] = {
    # name: (bytes, expected field, phrase in detail)
    "raw pickle": (lambda: pickle.dumps({"x": [1, 2]}), "file", "pickle"),
    "pickled object npy": (_object_npy, "x", "object"),
    "object npz member": (lambda: zip_with_members({"x.npy": _object_npy()}), "x", "object"),
    "string dtype": (lambda: npy_bytes(np.array([["a", "b"]] * 3)), "x", "dtype"),
    "complex dtype": (lambda: npy_bytes(np.ones((3, 2), dtype=complex)), "x", "dtype"),
    "nan": (lambda: npy_bytes(np.array([[0.0, np.nan], [1.0, 2.0]])), "x", "NaN"),
    "inf": (lambda: npy_bytes(np.array([[0.0, np.inf], [1.0, 2.0]])), "x", "Inf"),
    "rank 1": (lambda: npy_bytes(np.arange(10.0)), "x", "rank"),
    "rank 5": (lambda: npy_bytes(np.zeros((2, 1, 2, 2, 2))), "x", "rank"),
    "empty": (lambda: npy_bytes(np.zeros((0, 2))), "x", "empty"),
    "garbage": (lambda: b"this is not an array at all", "file", "not a .npy"),
    "malformed header": (lambda: b"\x93NUMPY\x01\x00\x10\x00{'descr': nope}   \n", "file",
                         "header"),
    "truncated npy": (_truncated_npy, "file", "truncated"),
    "corrupt zip": (lambda: b"PK\x03\x04" + b"\x00" * 40, "file", None),
    "npz without x": (lambda: npz_bytes(labels=np.arange(3)), "x", "no array named 'x'"),
    "npz extra member": (lambda: npz_bytes(x=np.zeros((3, 2)), evil=np.zeros(2)), "file",
                         "unexpected"),
    "npz header lies": (_lying_npz_member, "x", "declares"),
    "labels count mismatch": (lambda: npz_bytes(x=np.zeros((5, 2)), labels=np.arange(4)),
                              "labels", "labels"),
    "float labels": (lambda: npz_bytes(x=np.zeros((5, 2)), labels=np.linspace(0, 1, 5)),
                     "labels", "dtype"),
    "negative labels": (lambda: npz_bytes(x=np.zeros((5, 2)), labels=-np.arange(5)),
                        "labels", ">= 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_refused_and_changes_nothing(api: TestClient, state: State,
                                                 case: str) -> None:
    make, field, phrase = BAD_FILES[case]
    before = state()
    doc = assert_problem(upload(api, make()), 422, field)
    if phrase:
        assert phrase.lower() in doc["detail"].lower(), doc
    assert state() == before


@pytest.mark.parametrize("form", [{"layout": "sideways"}, {"test_fraction": "1.5"},
                                  {"value_min": "0"}, {"unknown": "1"}])
def test_bad_form_fields_are_refused(api: TestClient, state: State,
                                     form: dict[str, str]) -> None:
    before = state()
    doc = assert_problem(upload(api, npy_bytes(np.zeros((4, 2))), form=form), 422)
    assert doc["field"] in form or doc["field"] == "value_max"
    assert state() == before


def test_missing_file_field_is_422(api: TestClient) -> None:
    r = api.post("/v1/datasets", files={"other": ("x.npy", npy_bytes(np.zeros((3, 2))))})
    assert_problem(r, 422, "other")
    assert_problem(api.post("/v1/datasets", data={"name": "x"},
                            headers={"content-type": "multipart/form-data; boundary=zz"}), 422)


def test_unsupported_content_type_is_415(api: TestClient) -> None:
    assert_problem(api.post("/v1/datasets", content=b"x", headers={"content-type": "text/plain"}),
                   415)


@pytest.fixture
def small_cap_api(settings: Settings, owner_key: tuple[str, str]) -> Iterator[TestClient]:
    capped = settings.model_copy(update={"max_upload_bytes": 4096, "max_array_elements": 1000})
    with TestClient(create_app(capped), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        yield c


def _multipart(data: bytes, boundary: str = "bnd") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"x.npy\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()


def test_oversized_chunked_upload_is_413(small_cap_api: TestClient, state: State) -> None:
    """No Content-Length (chunked body): the streaming counter refuses it."""
    body = _multipart(npy_bytes(np.zeros((20_000,))))  # 160 kB >> 4 kB

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1024):
            yield body[i:i + 1024]

    before = state()
    r = small_cap_api.post("/v1/datasets", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=bnd"})
    doc = assert_problem(r, 413, "file")
    assert doc["limit"] == 4096 and "MAX_UPLOAD_BYTES" in doc["detail"]
    assert state() == before


def test_cap_stops_reading_the_stream_early(tmp_path: Path) -> None:
    """The body is pulled chunk by chunk and reading stops at the first chunk past the cap."""
    body = _multipart(npy_bytes(np.zeros((20_000,))))
    size = 1024
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        start = pulled * size
        pulled += 1
        return {"type": "http.request", "body": body[start:start + size],
                "more_body": start + size < len(body)}

    scope = {"type": "http", "method": "POST", "path": "/v1/datasets", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=bnd")]}

    async def run() -> None:
        await receive_multipart(Request(scope, receive), 4096, tmp_path / "staged")

    with pytest.raises(ProblemError) as info:
        asyncio.run(run())
    assert info.value.status == 413
    assert pulled == 5  # 5 kB read of 160 kB


def test_declared_content_length_over_cap_is_413(small_cap_api: TestClient, state: State) -> None:
    before = state()
    r = upload(small_cap_api, npy_bytes(np.zeros((1000, 2))))
    assert_problem(r, 413, "file")
    assert state() == before


def test_too_many_elements_is_422_naming_the_cap(small_cap_api: TestClient) -> None:
    doc = assert_problem(upload(small_cap_api, npy_bytes(np.zeros((300, 4), np.uint8))), 422,
                         "x")
    assert "MAX_ARRAY_ELEMENTS" in doc["detail"]


def test_npz_member_declared_size_is_checked_before_decompressing(
        small_cap_api: TestClient, state: State, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip bomb: 2 MB of zeros deflate to 2 kB; its declared size alone refuses it."""
    bomb = zip_with_members({"x.npy": npy_bytes(np.zeros((250_000,)))})
    assert len(bomb) < 4096

    def no_decompress(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a member was opened (decompressed) before its size was checked")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_decompress)
    before = state()
    doc = assert_problem(upload(small_cap_api, bomb, "bomb.npz"), 422, "x")
    assert "declares" in doc["detail"] and "2000128" in doc["detail"]
    assert state() == before


def test_uploaded_npz_is_loaded_without_pickle(api: TestClient,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("pickle.loads must never run on uploads")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    x = np.arange(12.0).reshape(6, 2)
    r = upload(api, npz_bytes(x=x, labels=np.arange(6)), "a.npz")
    assert r.status_code == 201, r.text
    assert io.BytesIO  # keep import used
