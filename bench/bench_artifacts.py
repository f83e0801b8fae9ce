"""Artifact store throughput through the API, on each backend, and the worker blob cache's hit rate.

    .venv/bin/python bench/bench_artifacts.py                 # 200 MB, local and S3, cache run
    .venv/bin/python bench/bench_artifacts.py --mb 50 --cache-jobs 0

For each backend it starts what `make run` starts (SQLite, the bundled Redis, one worker, the
API) in a temporary DATA_DIR — for `s3` with ARTIFACT_URL pointing at moto's standalone S3
server, started here on 127.0.0.1 (a real HTTP S3 endpoint; MinIO or AWS would be faster or
slower than moto's in-memory Python server) — then:

- upload: POST /v1/datasets with a float32 .npy of --mb megabytes (multipart, streamed from
  disk), timed from the first byte sent to the 201: receiving and staging, validating the array,
  writing the canonical .npz and storing it (for S3: a multipart upload);
- download: GET /v1/datasets/{id}/download streamed to nowhere (the canonical blob, its sha256
  checked by the API as it streams);
- with --cache-jobs N (S3 only): N tiny train jobs on one data set run by the one worker; its
  blob cache's stats.json gives hits, misses and the hit rate.

Prints MB/s (10^6 bytes per second) per backend and direction, and the cache figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
         "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "bench-artifacts"
TINY_TRAIN = {"type": "train", "queue": "cpu",
              "network": {"arch": "mlp", "fourier_features": 8, "width": 16, "hidden_widths": [16]},
              "training": {"epochs": 1, "batch_size": 100},
              "measurement": {"n_times": 8, "n_samples": 512}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    log = workdir / "moto.log"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **CREDS}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc, log, 60)
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench"
                     ).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def stack(workdir: Path, extra_env: dict[str, str]) -> Iterator[tuple[str, str, Path]]:
    """(base URL, API key, DATA_DIR) of a fresh `python -m runner`."""
    data_dir = Path(tempfile.mkdtemp(prefix="ne-bench-art-", dir=workdir))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "ARTIFACT_DIR", "ARTIFACT_URL")}
    env.update(DATA_DIR=str(data_dir), PORT=str(port), MAX_UPLOAD_BYTES=str(2**31), **extra_env)
    log = data_dir / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "runner"], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not _up(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the stack did not start:\n" + log.read_text()[-4000:])
            time.sleep(0.3)
        yield base, (data_dir / "api-key").read_text().strip(), data_dir
    finally:
        stop(proc)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def make_npy(path: Path, megabytes: float) -> int:
    cols = 128
    rows = int(megabytes * 1e6 / 4 / cols)
    x = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    np.save(path, x, allow_pickle=False)
    return path.stat().st_size


def throughput(base: str, key: str, npy: Path) -> tuple[float, float, int, str]:
    """(upload MB/s, download MB/s, stored bytes, dataset id)."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=600, headers=headers) as c:
        size = npy.stat().st_size
        t0 = time.perf_counter()
        with npy.open("rb") as fh:
            r = c.post("/v1/datasets", files={"file": ("big.npy", fh, "application/octet-stream")},
                       data={"name": "bench"})
        up = time.perf_counter() - t0
        r.raise_for_status()
        doc = r.json()
        t0 = time.perf_counter()
        got = 0
        digest = hashlib.sha256()
        with c.stream("GET", f"/v1/datasets/{doc['id']}/download") as resp:
            resp.raise_for_status()
            for chunk in resp.iter_bytes(1 << 20):
                got += len(chunk)
                digest.update(chunk)
        down = time.perf_counter() - t0
        assert digest.hexdigest() == doc["sha256"], "downloaded bytes differ from the stored blob"
        return size / up / 1e6, got / down / 1e6, got, doc["id"]


def cache_run(base: str, key: str, data_dir: Path, jobs: int) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as c:
        ds = c.post("/v1/datasets", json={"kind": "gaussian_mixture", "n_components": 5, "dim": 2,
                                          "n_samples": 20000, "seed": 0}).json()["id"]
        ids = [c.post("/v1/jobs", json={**TINY_TRAIN, "dataset_id": ds}).json()["id"]
               for _ in range(jobs)]
        for job_id in ids:
            while (doc := c.get(f"/v1/jobs/{job_id}").json())["status"] not in (
                    "succeeded", "failed", "canceled"):
                time.sleep(0.5)
            assert doc["status"] == "succeeded", doc
    return json.loads((data_dir / "blob-cache" / "stats.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=200.0, help="size of the uploaded .npy (10^6 bytes)")
    p.add_argument("--backends", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    p.add_argument("--cache-jobs", type=int, default=10, help="train jobs for the cache run (s3)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ne-bench-art-"))
    try:
        npy = workdir / "big.npy"
        size = make_npy(npy, args.mb)
        print(f"data set: float32 .npy of {size / 1e6:.1f} MB")
        rows = []
        with moto_server(workdir) as endpoint:
            for backend in args.backends:
                env = {} if backend == "local" else {
                    "ARTIFACT_URL": f"s3://{BUCKET}/{backend}-{int(time.time())}",
                    "AWS_ENDPOINT_URL": endpoint, **CREDS}
                with stack(workdir, env) as (base, key, data_dir):
                    up, down, stored, _ = throughput(base, key, npy)
                    rows.append((backend, up, down, stored))
                    print(f"{backend:>5}: upload {up:7.1f} MB/s   download {down:7.1f} MB/s   "
                          f"(stored blob {stored / 1e6:.1f} MB)", flush=True)
                    if backend == "s3" and args.cache_jobs > 0:
                        stats = cache_run(base, key, data_dir, args.cache_jobs)
                        hits, misses = stats.get("hits", 0), stats.get("misses", 0)
                        print(f"  blob cache, {args.cache_jobs} train jobs on one data set: "
                              f"{hits} hits, {misses} misses, hit rate "
                              f"{hits / max(hits + misses, 1):.0%}, "
                              f"{stats.get('bytes_downloaded', 0) / 1e6:.2f} MB downloaded")
        print("\nbackend  upload MB/s  download MB/s")
        for backend, up, down, _ in rows:
            print(f"{backend:>7}  {up:11.1f}  {down:13.1f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
