"""Load on loopback: a burst of concurrent reads and of concurrent submissions (issue 10).

    python bench/bench_load.py                      # embedded stack (SQLite + bundled Redis)
    python bench/bench_load.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/DB \
        --redis-url redis://127.0.0.1:6379/10       # the same stack on PostgreSQL + Redis
    python bench/bench_load.py --url http://127.0.0.1:8000 --key ne_...   # a running stack

Loopback only (the URL must be 127.0.0.1 / localhost) and bounded: --reads requests at once
(default 2,000: a measurement and its curve, alternately) and --submits POST /v1/jobs at once
(default 200, each with its own Idempotency-Key), every request with a 30 s client timeout.

It prints: the status histogram, server errors other than a 503 with Retry-After (must be 0),
client timeouts / connection errors, p50 / p99 latency, the fraction answered 200 (the target is
>= 90 %; 503 + Retry-After counts as shed load, not as an error), /healthz latency right after
each burst, and whether every 202 was persisted and every persisted job was answered 202.
Submissions shed with 503 + Retry-After are retried with the same Idempotency-Key (at most 5
times), which is what a client should do. The submitted jobs are canceled at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service_overhead import embedded_stack  # noqa: E402

CLIENT_TIMEOUT_S = 30.0
MIXTURE = {"kind": "gaussian_mixture", "weights": [0.5, 0.5], "means": [[-2.0, 0.0], [2.0, 0.0]],
           "stds": [[0.5, 0.5], [0.5, 0.5]], "n_samples": 256, "seed": 0}
TINY_TRAIN = {"type": "train", "queue": "cpu",
              "network": {"arch": "mlp", "width": 16, "hidden_widths": [16],
                          "fourier_features": 8},
              "training": {"epochs": 1, "batch_size": 64, "num_steps": 1, "warmup_steps": 0},
              "measurement": {"n_times": 8, "n_samples": 256}}
SETUP_WAIT_S = 600


@contextlib.contextmanager
def stack(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.url:
        host = urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("loopback only: --url must point at 127.0.0.1 or localhost")
        yield args.url.rstrip("/"), args.key
        return
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL",
                                            "MAX_QUEUED_JOBS_PER_OWNER")}
    extra = {"MAX_QUEUED_JOBS_PER_OWNER": str(max(1000, 2 * args.submits))}
    if args.database_url:
        extra["DATABASE_URL"] = args.database_url
    if args.redis_url:
        extra["REDIS_URL"] = args.redis_url
    os.environ.update(extra)
    try:
        with embedded_stack(keep_env=tuple(extra)) as (base, key):
            yield base, key
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def setup(base: str, key: str) -> str:
    """A finished measurement to read: a mixture and a one-epoch train job."""
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as c:
        ds = c.post("/v1/datasets", json=MIXTURE)
        ds.raise_for_status()
        job = c.post("/v1/jobs", json={**TINY_TRAIN, "dataset_id": ds.json()["id"]})
        job.raise_for_status()
        deadline = time.monotonic() + SETUP_WAIT_S
        while time.monotonic() < deadline:
            doc = c.get(f"/v1/jobs/{job.json()['id']}").json()
            if doc["status"] == "succeeded":
                return str(doc["measurement_id"])
            if doc["status"] in ("failed", "canceled"):
                raise SystemExit(f"setup job {doc['status']}: {doc.get('error')}")
            time.sleep(1.0)
    raise SystemExit("setup job did not finish in time")


def healthz_ms(base: str) -> float:
    t0 = time.perf_counter()
    r = httpx.get(f"{base}/healthz", timeout=CLIENT_TIMEOUT_S)
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000


class Tally:
    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.server_errors = 0  # 5xx other than 503 + Retry-After
        self.shed = 0  # 503 + Retry-After

    def add(self, status: str, seconds: float, retry_after: bool = False) -> None:
        self.status[status] += 1
        self.latencies.append(seconds)
        if status.isdigit() and int(status) >= 500:
            if status == "503" and retry_after:
                self.shed += 1
            else:
                self.server_errors += 1

    def report(self, name: str) -> None:
        n = sum(self.status.values())
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        ok = self.status.get("200", 0) + self.status.get("202", 0)
        print(f"{name}: {n} requests; statuses {dict(sorted(self.status.items()))}")
        print(f"  server errors (5xx except 503 + Retry-After): {self.server_errors}; "
              f"shed (503 + Retry-After): {self.shed}; "
              f"timeouts/connection errors: {self.status.get('timeout', 0)}"
              f"/{self.status.get('connect-error', 0)}")
        print(f"  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; "
              f"answered 2xx: {ok / max(n, 1):.1%}")


async def _one(client: httpx.AsyncClient, method: str, url: str, tally: Tally,
               **kwargs: Any) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        r = await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        tally.add("timeout", time.perf_counter() - t0)
        return None
    except httpx.TransportError:
        tally.add("connect-error", time.perf_counter() - t0)
        return None
    tally.add(str(r.status_code), time.perf_counter() - t0, "retry-after" in r.headers)
    return r


def _client(base: str, key: str, n: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S,
                             headers={"Authorization": f"Bearer {key}"},
                             limits=httpx.Limits(max_connections=n, max_keepalive_connections=0))


async def reads(base: str, key: str, measurement_id: str, n: int) -> Tally:
    tally = Tally()
    paths = [f"/v1/measurements/{measurement_id}", f"/v1/measurements/{measurement_id}/curve"]
    async with _client(base, key, n) as client:
        await asyncio.gather(*(_one(client, "GET", paths[i % 2], tally) for i in range(n)))
    return tally


async def submits(base: str, key: str, dataset_id: str, n: int) -> tuple[Tally, dict[str, str]]:
    """Returns the tally of first attempts and {idempotency key: job id answered 202}."""
    tally, accepted = Tally(), {}
    body = {**TINY_TRAIN, "dataset_id": dataset_id}

    async def submit(client: httpx.AsyncClient, idem: str) -> None:
        for attempt in range(6):
            r = await _one(client, "POST", "/v1/jobs", tally if attempt == 0 else Tally(),
                           json=body, headers={"Idempotency-Key": idem})
            if r is not None and r.status_code == 202:
                accepted[idem] = r.json()["id"]
                return
            retry_after = float(r.headers.get("retry-after", 1)) if r is not None else 1.0
            await asyncio.sleep(min(retry_after, 5.0))

    async with _client(base, key, n) as client:
        await asyncio.gather(*(submit(client, f"bench-{uuid.uuid4().hex}") for _ in range(n)))
    return tally, accepted


def check_persisted(base: str, key: str, accepted: dict[str, str], since: str) -> None:
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as c:
        persisted: set[str] = set()
        offset = 0
        while True:
            page = c.get("/v1/jobs", params={"limit": 500, "offset": offset}).json()
            persisted |= {j["id"] for j in page["items"] if j["created_at"] >= since}
            if page["next_offset"] is None:
                break
            offset = page["next_offset"]
        answered = set(accepted.values())
        print(f"  answered 202: {len(answered)} jobs; persisted: {len(persisted)}; "
              f"202 but not persisted: {len(answered - persisted)}; "
              f"persisted but never answered 202: {len(persisted - answered)}")
        for job_id in persisted:
            c.post(f"/v1/jobs/{job_id}/cancel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running stack on loopback (needs --key)")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--database-url", help="start the embedded stack on this database")
    parser.add_argument("--redis-url", help="start the embedded stack on this Redis")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--submits", type=int, default=200)
    args = parser.parse_args()
    if args.reads > 5000 or args.submits > 1000:
        raise SystemExit("bounded: at most 5,000 reads and 1,000 submissions")
    with stack(args) as (base, key):
        measurement_id = setup(base, key)
        print(f"stack {base}; reading measurement {measurement_id}")
        t0 = time.perf_counter()
        read_tally = asyncio.run(reads(base, key, measurement_id, args.reads))
        print(f"{args.reads} concurrent reads in {time.perf_counter() - t0:.1f} s")
        read_tally.report("reads")
        print(f"  /healthz right after: {healthz_ms(base):.0f} ms")
        with httpx.Client(base_url=base, timeout=120,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            dataset_id = c.post("/v1/datasets", json=MIXTURE).json()["id"]
            since = c.get("/v1/datasets").json()["items"][0]["created_at"]
        t0 = time.perf_counter()
        sub_tally, accepted = asyncio.run(submits(base, key, dataset_id, args.submits))
        print(f"{args.submits} concurrent submissions in {time.perf_counter() - t0:.1f} s")
        sub_tally.report("submissions (first attempts)")
        print(f"  /healthz right after: {healthz_ms(base):.0f} ms")
        print(f"  accepted after retries with the same Idempotency-Key: {len(accepted)}"
              f"/{args.submits}")
        check_persisted(base, key, accepted, since)


if __name__ == "__main__":
    main()
