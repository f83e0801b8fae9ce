"""End to end: a UNet2DModel trained with diffusers' own DDPM loop on the 8x8 digits, saved with
save_pretrained, zipped, uploaded through the API, measured and sampled by a real worker process
(SQLite + bundled Redis)."""

from __future__ import annotations

import io
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.data import is_eight_bit
from tests.app.helpers import npy_bytes
from tests.e2e.stack import Stack, running_stack, wait_for_job
from tests.pipelines import train_digits_pipeline, zip_folder

JOB_TIMEOUT = 240.0


@pytest.fixture
def stack(bundled_redis, bundled_redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    short = Path(tempfile.mkdtemp(prefix="ne-dif-"))
    try:
        with running_stack(f"sqlite:///{short / 'e2e.sqlite3'}", bundled_redis_url, short, tmp_path) as s:
            yield s
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_trained_diffusers_pipeline_is_uploaded_measured_and_sampled(stack: Stack, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    folder, losses = train_digits_pipeline(tmp_path / "ddpm-digits", steps=200)
    assert losses[-1] < 0.6 * losses[0], losses  # it learned something
    with stack.client() as c:
        r = c.post("/v1/checkpoints", files={"file": ("ddpm-digits.zip", zip_folder(folder, prefix="ddpm-digits/"),
                                                      "application/zip")})
        assert r.status_code == 201, r.text
        ckpt = r.json()
        assert ckpt["source"] == "diffusers" and ckpt["parametrization"] == "noise"
        assert ckpt["event_shape"] == [1, 8, 8]

        # the digits as 8-bit images (0..255), kept unscaled: the measure job maps them to [-1, 1]
        levels = np.round(load_digits().images / 16.0 * 255.0).astype(np.uint8)
        r = c.post("/v1/datasets", files={"file": ("digits.npy", npy_bytes(levels), "application/octet-stream")},
                   data={"layout": "nhw", "scale": "none", "name": "digits-uint8"})
        assert r.status_code == 201, r.text
        dataset = r.json()
        assert is_eight_bit(dataset["source_dtype"]) and dataset["value_range"] is None  # levels, no range given

        r = c.post("/v1/jobs", json={"type": "measure", "checkpoint_id": ckpt["id"], "dataset_id": dataset["id"],
                                     "measurement": {"n_times": 9, "n_samples": 1024}})
        assert r.status_code == 202, r.text
        job = wait_for_job(c, r.json()["id"], JOB_TIMEOUT, stack)
        assert job["status"] == "succeeded", (job, stack.log_text())
        m = c.get(f"/v1/measurements/{job['measurement_id']}").json()
        s_nn = m["neural_entropy"]["nats"]
        assert math.isfinite(s_nn) and s_nn > 0 and m["neural_entropy"]["stderr"] < 0.2 * s_nn
        assert m["t_min"] == pytest.approx(1e-3) and m["t_max"] == pytest.approx(1.0)
        rep = m["reproducibility"]
        assert rep["process"]["kind"] == "discrete" and rep["parametrization"] == "noise"
        assert rep["value_range"]["data"] == [0.0, 255.0] and rep["value_range"]["model"] == [-1.0, 1.0]
        assert rep["value_range"]["scale"] == pytest.approx(2 / 255)

        # a data set of the wrong shape is refused before any job runs
        r = c.post("/v1/datasets", json={"kind": "gaussian_mixture", "weights": [1.0], "means": [[0.0, 0.0]],
                                         "stds": [[1.0, 1.0]], "n_samples": 64})
        r = c.post("/v1/jobs", json={"type": "measure", "checkpoint_id": ckpt["id"], "dataset_id": r.json()["id"]})
        assert r.status_code == 422 and "sample_size 8" in r.json()["detail"], r.text

        r = c.post("/v1/jobs", json={"type": "sample", "checkpoint_id": ckpt["id"], "n": 8, "steps": 8})
        assert r.status_code == 202, r.text
        job = wait_for_job(c, r.json()["id"], JOB_TIMEOUT, stack)
        assert job["status"] == "succeeded", (job, stack.log_text())
        r = c.get(f"/v1/jobs/{job['id']}/samples.npy")
        assert r.status_code == 200
        x = np.load(io.BytesIO(r.content), allow_pickle=False)
        assert x.shape == (8, 1, 8, 8) and np.isfinite(x).all()
        assert c.get(f"/v1/jobs/{job['id']}/samples.png").status_code == 200
