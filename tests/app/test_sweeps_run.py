"""Sweeps whose jobs run (`worker.jobs.run_job` in this process, tiny networks): the table and the
log fit against the jobs' own measurements, CSV / JSON / PNG, a grid point that fails, and the
comparison of measurements on one time axis."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.artifacts import get_artifact_store
from tests.app.helpers import assert_problem, create_mixture
from worker.blob_cache import worker_blob_cache
from worker.jobs import run_job

TINY = {"arch": "mlp", "fourier_features": 8, "width": 16, "hidden_widths": [16]}
TRAINING = {"epochs": 2, "batch_size": 32, "num_steps": 2, "lr": 1e-3}
MEASUREMENT = {"n_times": 8, "n_samples": 1024}
PNG = b"\x89PNG\r\n\x1a\n"


def run_sweep(api: TestClient, grid: dict[str, Any], training: dict[str, Any] | None = None,
              run: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit a sweep on a fresh 2-D mixture (300 training points, held out: fresh draws) and
    run its first `run` jobs (all by default); (sweep document, dataset)."""
    dataset = create_mixture(api, n_samples=300)
    body = {"base": {"dataset_id": dataset["id"], "network": TINY, "queue": "cpu",
                     "training": training or TRAINING, "measurement": MEASUREMENT},
            "grid": grid}
    r = api.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    for job in r.json()["jobs"][:run]:
        assert run_job(job["id"]) == "succeeded", api.get(f"/v1/jobs/{job['id']}").json()["error"]
    return api.get(r.headers["location"]).json(), dataset


def neural_entropy(api: TestClient, measurement_id: str) -> dict[str, Any]:
    return api.get(f"/v1/measurements/{measurement_id}").json()


def test_finished_sweep_has_the_table_over_seeds_and_the_log_fit(api: TestClient) -> None:
    grid = {"n_train": [64, 128, 256], "seed": [0, 1]}
    doc, _ = run_sweep(api, grid, {**TRAINING, "milestones": [1]})
    assert doc["status"] == "succeeded" and doc["counts"]["succeeded"] == 6
    rows = doc["table"]
    assert [(r["process"], r["n_train"], r["epoch"]) for r in rows] == [
        ("vp", n, e) for n in (64, 128, 256) for e in (1, 2)]
    for row in rows:  # against the measurements themselves
        jobs = [j for j in doc["jobs"]
                if (j["process"], j["n_train"]) == (row["process"], row["n_train"])]
        ids = [j["measurement_id"] for j in jobs] if row["epoch"] == 2 else [
            api.get(f"/v1/jobs/{j['id']}").json()["milestones"][0]["measurement_id"] for j in jobs]
        assert sorted(row["measurement_ids"]) == sorted(ids)
        found = [neural_entropy(api, mid) for mid in ids]
        nats = np.array([m["neural_entropy"]["nats"] for m in found])
        se = np.array([m["neural_entropy"]["stderr"] for m in found])
        assert row["n_seeds"] == 2 and row["final"] == (row["epoch"] == 2)
        assert row["mean"] == pytest.approx(nats.mean(), rel=1e-12)
        assert row["spread"] == pytest.approx(abs(nats[0] - nats[1]) / math.sqrt(2), rel=1e-9)
        assert row["stderr"] == pytest.approx(math.hypot(*se) / 2, rel=1e-9)
        assert row["bits_per_dim"] == pytest.approx(nats.mean() / math.log(2) / 2, rel=1e-9)
        totals = [m["total_entropy"]["nats"] for m in found]
        assert row["total_entropy"] == pytest.approx(np.mean(totals), rel=1e-12) and totals[0] > 0

    assert [f["process"] for f in doc["fits"]] == ["vp"]
    for fit in doc["fits"]:
        final = [r for r in rows if r["process"] == fit["process"] and r["final"]]
        x = np.log([r["n_train"] for r in final])
        y = np.array([r["mean"] for r in final])
        b, a = np.polyfit(x, y, 1)
        assert (fit["a"], fit["b"]) == pytest.approx((a, b), rel=1e-9)
        assert fit["n_points"] == 3 and fit["n_train"] == [64, 128, 256] and fit["note"] is None
        residuals = y - (a + b * x)
        assert fit["residuals"] == pytest.approx(residuals.tolist(), abs=1e-9)
        assert fit["r_squared"] == pytest.approx(
            1 - (residuals**2).sum() / ((y - y.mean()) ** 2).sum(), rel=1e-9)
        design = np.stack([np.ones(3), x], axis=1)
        var = np.array([r["spread"] ** 2 / 2 + r["stderr"] ** 2 for r in final])
        inv = np.linalg.inv(design.T @ design)
        cov = inv @ design.T @ np.diag(var) @ design @ inv
        assert (fit["a_stderr"], fit["b_stderr"]) == pytest.approx(np.sqrt(np.diag(cov)), rel=1e-9)

    table = api.get(f"/v1/sweeps/{doc['id']}/table?format=json").json()
    assert table == {"rows": rows}
    r = api.get(f"/v1/sweeps/{doc['id']}/table", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(r.text)))
    assert len(parsed) == len(rows)
    assert [(int(p["n_train"]), p["process"], int(p["epoch"]), float(p["mean"])) for p in parsed] \
        == [(r["n_train"], r["process"], r["epoch"], r["mean"]) for r in rows]
    assert parsed[0]["network"] == "" and parsed[0]["final"] == "False"
    plot = api.get(f"/v1/sweeps/{doc['id']}/plot.png")
    assert plot.headers["content-type"] == "image/png" and plot.content.startswith(PNG)
    assert len(plot.content) > 10_000


def test_a_grid_point_that_fails_is_reported_and_the_rest_is_fitted(api: TestClient) -> None:
    doc, dataset = run_sweep(api, {"n_train": [64, 128, 256, 300]}, run=3)
    assert doc["status"] == "running" and doc["counts"]["queued"] == 1
    # the last job's input is gone from the artifact store when the worker gets to it (a worker
    # whose blob cache has no copy: with a remote store, this one cached it for the first three)
    get_artifact_store().remove_blob(dataset["sha256"])
    worker_blob_cache().path(dataset["sha256"]).unlink(missing_ok=True)
    last = doc["jobs"][-1]["id"]
    assert run_job(last) == "failed"
    doc = api.get(f"/v1/sweeps/{doc['id']}").json()
    assert doc["status"] == "partial"
    assert doc["counts"] == {"queued": 0, "running": 0, "succeeded": 3, "failed": 1,
                             "canceled": 0, "total": 4}
    failed = [j for j in doc["jobs"] if j["status"] == "failed"]
    assert [(j["id"], j["n_train"]) for j in failed] == [(last, 300)]
    assert "missing from the artifact store" in failed[0]["error"]
    assert [r["n_train"] for r in doc["table"]] == [64, 128, 256]
    fit = doc["fits"][0]
    assert fit["n_points"] == 3 and fit["n_train"] == [64, 128, 256]
    assert fit["a"] is not None and fit["r_squared"] is not None
    assert fit["a_stderr"] > 0  # one seed: the estimator's stderr only
    assert api.get(f"/v1/sweeps/{doc['id']}/plot.png").content.startswith(PNG)


def test_two_sizes_are_said_and_compare_puts_measurements_on_one_time_axis(api: TestClient,
                                                    other_headers: dict[str, str]) -> None:
    doc, dataset = run_sweep(api, {"n_train": [64, 128], "process": [{"kind": "vp"},
                                                                     {"kind": "sl"}]},
                             {**TRAINING, "epochs": 1})
    assert [(f["process"], f["n_points"]) for f in doc["fits"]] == [("vp", 2), ("sl", 2)]
    assert all("only 2 sizes" in f["note"] and f["a_stderr_residual"] is None
               for f in doc["fits"])
    by = {(j["n_train"], j["process"]): j["measurement_id"] for j in doc["jobs"]}
    ids = [by[(64, "vp")], by[(128, "vp")]]
    r = api.get("/v1/compare", params={"measurement_ids": ",".join(ids)})
    assert r.status_code == 200, r.text
    cmp = r.json()
    assert cmp["time_axis"] == {"kind": "vp", "t_min": 1e-5, "t_max": 1.0}
    assert [s["label"] for s in cmp["series"]] == ["gaussian_mixture, N=64, vp, epoch 1",
                                                   "gaussian_mixture, N=128, vp, epoch 1"]
    for series, mid in zip(cmp["series"], ids, strict=True):
        measurement = neural_entropy(api, mid)
        curve = api.get(f"/v1/measurements/{mid}/curve").json()
        assert series["n_train"] in (64, 128) and series["dataset_id"] == dataset["id"]
        assert series["neural_entropy"] == measurement["neural_entropy"]["nats"]
        assert [p["cumulative"] for p in series["points"]] == \
            [p["cumulative"] for p in curve["points"]]
    lines = api.get("/v1/compare", params={"measurement_ids": ",".join(ids),
                                           "format": "csv"}).text.splitlines()
    assert lines[0] == "measurement_id,label,s,rate,rate_stderr,cumulative,cumulative_stderr"
    assert len(lines) == 1 + sum(len(s["points"]) for s in cmp["series"])
    png = api.get("/v1/compare", params={"measurement_ids": ",".join(ids), "format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content.startswith(PNG)

    problem = assert_problem(api.get("/v1/compare", params={
        "measurement_ids": f"{by[(64, 'vp')]},{by[(64, 'sl')]}"}), 422, "measurement_ids")
    assert "vp on [1e-05, 1]" in problem["detail"] and "sl on" in problem["detail"]
    assert_problem(api.get("/v1/compare", params={"measurement_ids": " , "}), 422,
                   "measurement_ids")
    assert_problem(api.get("/v1/compare", params={"measurement_ids": f"{ids[0]},meas_nope"}),
                   404, "measurement_ids")
    assert_problem(api.get("/v1/compare", params={"measurement_ids": ids[0]},
                           headers=other_headers), 404, "measurement_ids")
