"""Measurement summary, curve as JSON and CSV, and the plot (rows inserted as the worker would)."""

from __future__ import annotations

import csv
import io
import math

import matplotlib.image
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core.tables import CurvePoint, Measurement
from tests.app.helpers import assert_problem

SUMMARY = {
    "neural_entropy": {"nats": 1.05, "bits": 1.05 / math.log(2), "bits_per_dim": 0.757,
                       "stderr": 0.006, "stderr_bits": 0.006 / math.log(2)},
    "total_entropy": {"nats": 1.148, "bits": 1.148 / math.log(2), "stderr": 0.004},
    "density_bound": None, "data_entropy": None, "t_min": 1e-5, "t_max": 1.0,
    "n_evaluations": 65536, "dim": 2, "n_pool": 10_000, "generalization": None,
}
REPRO = {"data_sha256": "ab" * 32, "dataset_id": "ds_x", "split": "test",
         "process": {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0},
         "network": {"arch": "mlp"}, "training": {"epochs": 10}, "estimator": {"n_times": 64},
         "parametrization": "entropy_matching", "seed": 0, "device": "cpu",
         "code_version": "0.1.0", "torch_version": "2.13.0", "checkpoint_id": None, "epoch": 10}


def insert_measurement(session: Session, owner_id: str, with_total: bool = True,
                       n: int = 64) -> tuple[str, np.ndarray]:
    s = np.geomspace(1e-5, 1.0, n)
    rate = np.exp(-s) * 2.0
    cum = np.cumsum(rate) * 0.01
    m = Measurement(owner_id=owner_id, dataset_id="ds_x", epoch=10,
                    summary=SUMMARY if with_total else {**SUMMARY, "total_entropy": None},
                    reproducibility=REPRO)
    m.points = [CurvePoint(idx=i, s=float(s[i]), rate=float(rate[i]), rate_stderr=0.01,
                           cumulative=float(cum[i]), cumulative_stderr=0.001,
                           total_rate=float(rate[i] * 1.1) if with_total else None,
                           total_rate_stderr=0.01 if with_total else None,
                           total_cumulative=float(cum[i] * 1.1) if with_total else None)
                for i in range(n)]
    session.add(m)
    session.commit()
    return m.id, s


@pytest.fixture
def measurement(session: Session, owner_key: tuple[str, str]) -> tuple[str, np.ndarray]:
    return insert_measurement(session, owner_key[0])


def test_summary_has_entropies_and_reproducibility(api: TestClient,
                                                   measurement: tuple[str, np.ndarray]) -> None:
    mid, _ = measurement
    doc = api.get(f"/v1/measurements/{mid}").json()
    assert doc["id"] == mid and doc["n_points"] == 64
    assert doc["neural_entropy"] == SUMMARY["neural_entropy"]
    assert doc["total_entropy"] == SUMMARY["total_entropy"]
    assert doc["summary"] == SUMMARY
    assert doc["density_bound"] is None and (doc["t_min"], doc["t_max"]) == (1e-5, 1.0)
    assert doc["reproducibility"] == {**REPRO, "value_range": None, "torch_threads": None}  # not recorded in REPRO
    assert doc["links"]["plot"] == f"/v1/measurements/{mid}/plot.png"


def test_curve_json(api: TestClient, measurement: tuple[str, np.ndarray]) -> None:
    mid, s = measurement
    doc = api.get(f"/v1/measurements/{mid}/curve").json()
    assert doc["has_total"] is True and "total_cumulative" in doc["columns"]
    assert len(doc["points"]) == 64
    np.testing.assert_allclose([p["s"] for p in doc["points"]], s)
    assert doc == api.get(f"/v1/measurements/{mid}/curve", params={"format": "json"}).json()


def test_curve_csv(api: TestClient, measurement: tuple[str, np.ndarray]) -> None:
    mid, s = measurement
    r = api.get(f"/v1/measurements/{mid}/curve", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 64
    assert list(rows[0]) == ["s", "rate", "rate_stderr", "cumulative", "cumulative_stderr",
                             "total_rate", "total_rate_stderr", "total_cumulative"]
    np.testing.assert_allclose([float(row["s"]) for row in rows], s, rtol=1e-15)


def test_curve_without_total_omits_its_columns(api: TestClient, session: Session,
                                               owner_key: tuple[str, str]) -> None:
    mid, _ = insert_measurement(session, owner_key[0], with_total=False)
    header = api.get(f"/v1/measurements/{mid}/curve", params={"format": "csv"}).text.split("\n")[0]
    assert header == "s,rate,rate_stderr,cumulative,cumulative_stderr"
    doc = api.get(f"/v1/measurements/{mid}").json()
    assert doc["total_entropy"] is None
    assert api.get(f"/v1/measurements/{mid}/curve").json()["has_total"] is False
    assert api.get(f"/v1/measurements/{mid}/plot.png").status_code == 200


def test_plot_png(api: TestClient, measurement: tuple[str, np.ndarray]) -> None:
    mid, _ = measurement
    r = api.get(f"/v1/measurements/{mid}/plot.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(io.BytesIO(r.content), format="png")
    assert img.shape[0] >= 300 and img.shape[1] >= 800
    assert img[..., :3].std() > 0.05  # not blank


def test_bad_format_and_unknown_and_foreign_ids(api: TestClient, measurement: tuple[str, ...],
                                                other_headers: dict[str, str]) -> None:
    mid = measurement[0]
    assert_problem(api.get(f"/v1/measurements/{mid}/curve", params={"format": "xml"}), 422,
                   "format")
    for path in ("", "/curve", "/plot.png"):
        assert_problem(api.get(f"/v1/measurements/meas_nope{path}"), 404)
        assert_problem(api.get(f"/v1/measurements/{mid}{path}", headers=other_headers), 404)
