"""Service overhead: the time from POST /v1/jobs to `succeeded` minus the worker's compute time.

    .venv/bin/python bench/bench_service_overhead.py                 # starts an embedded stack
    .venv/bin/python bench/bench_service_overhead.py --url http://127.0.0.1:8000 --key KEY

Without --url it starts, in a temporary DATA_DIR, what `make run` starts (SQLite, the bundled
Redis, one worker, the API) and stops it afterwards. It then submits `--jobs` small train jobs one
after another (a 2-D mixture, a small MLP, 1 epoch) and polls each every `--poll` seconds.
Printed per job: the POST round trip, the wait in the queue (created_at -> started_at, which
includes the worker's fork and claim), compute_seconds (the worker's own time in the job body),
the wall time POST -> succeeded, and the overhead = wall - compute. The polling interval bounds
how late `succeeded` is seen, so it is part of the measured overhead (half of it on average).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MIXTURE = {"kind": "gaussian_mixture", "n_components": 5, "dim": 2, "n_samples": 1024,
           "seed": 0}
JOB = {"type": "train", "training": {"epochs": 1, "batch_size": 40},
       "network": {"arch": "mlp", "width": 128, "hidden_widths": [128, 64]},
       "measurement": {"n_times": 64, "n_samples": 8192}}


@contextlib.contextmanager
def embedded_stack(keep_env: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a fresh `python -m runner` in a temporary DATA_DIR; `keep_env`
    names variables (e.g. DATABASE_URL, REDIS_URL) passed on instead of dropped."""
    data_dir = Path(tempfile.mkdtemp(prefix="ne-bench-"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "ARTIFACT_DIR") or k in keep_env}
    env.update(DATA_DIR=str(data_dir), PORT=str(port))
    log = (data_dir / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "runner"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the embedded stack did not start:\n"
                                 + (data_dir / "run.log").read_text())
            time.sleep(0.2)
        time.sleep(2.0)  # let the worker finish its start-up imports
        yield base, (data_dir / "api-key").read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run(base: str, key: str, jobs: int, poll: float) -> None:
    with httpx.Client(base_url=base, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        r = c.post("/v1/datasets", json=MIXTURE)
        r.raise_for_status()
        dataset_id = r.json()["id"]
        print(f"{'job':>3} {'POST ms':>8} {'queue s':>8} {'compute s':>9} {'wall s':>7} "
              f"{'overhead s':>10}")
        overheads, walls, computes = [], [], []
        for i in range(jobs):
            t0 = time.perf_counter()
            r = c.post("/v1/jobs", json={**JOB, "dataset_id": dataset_id})
            post_ms = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            job_id = r.json()["id"]
            while True:
                doc = c.get(f"/v1/jobs/{job_id}").json()
                if doc["status"] in ("succeeded", "failed", "canceled"):
                    break
                time.sleep(poll)
            wall = time.perf_counter() - t0
            if doc["status"] != "succeeded":
                raise SystemExit(f"job {job_id} {doc['status']}: {doc.get('error')}")
            compute = float(doc["compute_seconds"])
            queue = _ts(doc["started_at"]) - _ts(doc["created_at"])
            overheads.append(wall - compute)
            walls.append(wall)
            computes.append(compute)
            print(f"{i + 1:>3} {post_ms:>8.1f} {queue:>8.3f} {compute:>9.3f} {wall:>7.3f} "
                  f"{wall - compute:>10.3f}")
        print(f"median over {jobs} jobs: wall {statistics.median(walls):.3f} s, compute "
              f"{statistics.median(computes):.3f} s, overhead {statistics.median(overheads):.3f} s "
              f"(min {min(overheads):.3f}, max {max(overheads):.3f}; poll every {poll} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an existing service (default: start an embedded one)")
    p.add_argument("--key", help="API key for --url")
    p.add_argument("--jobs", type=int, default=5)
    p.add_argument("--poll", type=float, default=0.05, help="seconds between GETs")
    args = p.parse_args()
    if args.url:
        run(args.url, args.key or os.environ.get("API_KEY", ""), args.jobs, args.poll)
        return
    with embedded_stack() as (base, key):
        run(base, key, args.jobs, args.poll)


if __name__ == "__main__":
    main()
