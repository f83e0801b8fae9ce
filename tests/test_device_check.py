"""bench/device_check.sh, the script that proves the GPU path on a CUDA machine, kept working here:

- its `--dry-run` (the same steps on CPU at tiny sizes: a real `python -m runner` stack plus a
  worker on the `gpu` queue, the train and measure jobs on both queues, the U-Net steps in three
  precisions, the autocast bias) completes and every verdict of its table is ok (~20-30 s);
- the requests of the full run (the sizes only a GPU machine runs) are accepted by the API as
  they are, so the one run on the GPU machine is not lost to a 422.
"""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from bench.device_check import Sizes, dataset_request, measure_request, train_request
from tests.e2e.procs import ROOT, clean_env
from worker.jobs import run_job

CHECKS = (
    "train job on `gpu`: device, compute s",
    "train job on `cpu`: device, compute s",
    "S_NN nats: gpu-trained vs cpu-trained",
    "gpu checkpoint measured on `gpu` vs `cpu`",
    "U-Net 32x32x3 training, fp32, batch 4",
    "U-Net 32x32x3 training, tf32, batch 4",
    "U-Net 32x32x3 training, bf16, batch 4",
    "S_NN float32 (mixture, nats)",
    "S_NN bf16 - float32 (same throws)",
)


def test_the_dry_run_completes_with_every_check_ok() -> None:
    out = subprocess.run([str(ROOT / "bench" / "device_check.sh"), "--dry-run"], cwd=ROOT,
                         env=clean_env(PYTHON=sys.executable), capture_output=True, text=True,
                         timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    table = text[text.index("\ncheck "):]
    assert "FAIL" not in table and "did not finish" not in table, table
    lines = {line.split("  ", 1)[0]: line for line in table.splitlines()}
    for check in CHECKS:
        assert check in lines, f"{check!r} missing from\n{table}"
    assert lines["train job on `gpu`: device, compute s"].rstrip().endswith("ok")
    assert lines["gpu checkpoint measured on `gpu` vs `cpu`"].rstrip().endswith(
        "combined stderr)")


def test_the_full_runs_requests_are_accepted(api: TestClient) -> None:
    full, dry = Sizes.for_run(dry=False), Sizes.for_run(dry=True)
    r = api.post("/v1/datasets", json=dataset_request(full))
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    for queue in ("gpu", "cpu"):
        r = api.post("/v1/jobs", json=train_request(dataset_id, full, queue))
        assert r.status_code == 202, r.text
        request = r.json()["request"]
        assert request["queue"] == queue and request["training"]["epochs"] == full.epochs
        assert request["measurement"]["n_samples"] == full.n_samples
    # a checkpoint to measure: the dry run's train job, run here (seconds)
    r = api.post("/v1/jobs", json=train_request(dataset_id, dry, "cpu"))
    assert r.status_code == 202, r.text
    assert run_job(r.json()["id"]) == "succeeded"
    checkpoint_id = api.get(f"/v1/jobs/{r.json()['id']}").json()["checkpoint_id"]
    for queue in ("gpu", "cpu"):
        r = api.post("/v1/jobs", json=measure_request(checkpoint_id, dataset_id, full, queue, 1))
        assert r.status_code == 202, r.text
        assert r.json()["request"]["measurement"]["n_samples"] == full.n_samples
