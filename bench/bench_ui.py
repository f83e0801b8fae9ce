"""Dashboard page load: a measurement page with 4,096 curve points (target: under 300 ms).

    .venv/bin/python bench/bench_ui.py [--points 4096] [--runs 20] [--no-browser]

Sets up, in a temporary DATA_DIR, a migrated SQLite database with one owner and one measurement
of `--points` curve points (rate, cumulative, their standard errors and the S_tot columns; the
values are a smooth synthetic curve — the page's cost depends on the number of points, not on
their values), and starts the API (`uvicorn app.main:app`, as `make run` does) on a free port.
Then it signs in through the form and measures:

- server: GET /ui/measurements/{id} (query, SVG drawing, template) and every asset the page
  references (its style sheet and script), as a client fetches them one after another; the
  page alone and page + assets, median and 90th percentile over --runs;
- browser (when the system `chromium` and Playwright are installed): headless Chromium's
  navigation to the page until the `load` event (HTML, assets, script run and chart set-up),
  from the Navigation Timing API, median over --runs.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.db import engine_for  # noqa: E402
from core.keys import create_api_key  # noqa: E402
from core.migrations import alembic_config  # noqa: E402
from core.tables import CurvePoint, Measurement  # noqa: E402


def setup_database(url: str, n_points: int) -> tuple[str, str]:
    """Migrate, create an owner and a measurement of n_points; (key, measurement id)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    with Session(engine_for(url)) as session:
        owner, key = create_api_key(session, "bench")
        s = [1e-5 * (1e5 ** (i / (n_points - 1))) for i in range(n_points)]
        rate = [2.0 * math.exp(-((math.log10(v) + 1) ** 2)) + 0.1 for v in s]
        cum, acc = [], 0.0
        for i, r in enumerate(rate):
            acc += r * (s[i] - (s[i - 1] if i else 0.0))
            cum.append(acc)
        summary = {
            "neural_entropy": {"nats": cum[-1], "bits": cum[-1] / math.log(2),
                               "bits_per_dim": cum[-1] / math.log(2) / 2, "stderr": 0.004,
                               "stderr_bits": 0.004 / math.log(2)},
            "total_entropy": {"nats": cum[-1] * 1.05, "bits": cum[-1] * 1.05 / math.log(2),
                              "stderr": 0.003},
            "density_bound": None, "data_entropy": None, "t_min": 1e-5, "t_max": 1.0,
            "n_evaluations": 65536, "dim": 2, "n_pool": 8192, "generalization": None}
        repro = {"data_sha256": "ab" * 32, "dataset_id": None, "split": "test",
                 "process": {"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0},
                 "network": {"arch": "mlp", "width": 128}, "training": {"epochs": 40},
                 "estimator": {"n_times": n_points}, "parametrization": "entropy_matching",
                 "seed": 0, "device": "cpu", "code_version": "bench", "torch_version": "-",
                 "checkpoint_id": None, "epoch": 40}
        m = Measurement(owner_id=owner.id, epoch=40, summary=summary, reproducibility=repro)
        m.points = [CurvePoint(idx=i, s=s[i], rate=rate[i], rate_stderr=0.01 * rate[i],
                               cumulative=cum[i], cumulative_stderr=0.002,
                               total_rate=rate[i] * 1.05, total_rate_stderr=0.01 * rate[i],
                               total_cumulative=cum[i] * 1.05) for i in range(n_points)]
        session.add(m)
        session.commit()
        return key, m.id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assets_of(html: str) -> list[str]:
    return re.findall(r'<(?:link[^>]*href|script[^>]*src|img[^>]*src)="(/[^"]+)"', html)


def stats(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return f"median {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms   min {values[0]:7.1f} ms"


def bench_server(base: str, key: str, mid: str, runs: int) -> None:
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/ui/sign-in", data={"api_key": key}, follow_redirects=False)
        assert r.status_code == 303, r.text
        url = f"/ui/measurements/{mid}"
        html = c.get(url).text  # warm-up (imports, template compilation)
        assets = assets_of(html)
        page_ms, total_ms = [], []
        size = len(html.encode())
        asset_bytes = 0
        for _ in range(runs):
            t0 = time.perf_counter()
            r = c.get(url)
            r.raise_for_status()
            t1 = time.perf_counter()
            asset_bytes = 0
            for a in assets:
                ra = c.get(a)
                ra.raise_for_status()
                asset_bytes += len(ra.content)
            t2 = time.perf_counter()
            page_ms.append((t1 - t0) * 1000)
            total_ms.append((t2 - t0) * 1000)
    print(f"page HTML: {size / 1024:.0f} KiB; assets {assets}: {asset_bytes / 1024:.0f} KiB")
    print(f"server, page alone:     {stats(page_ms)}")
    print(f"server, page + assets:  {stats(total_ms)}")


def bench_browser(base: str, key: str, mid: str, runs: int) -> None:
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("browser: skipped (no chromium on PATH or no playwright)")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        page = context.new_page()
        page.goto(f"{base}/ui/")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ui/jobs")
        page.goto(f"{base}/ui/measurements/{mid}")  # warm-up
        load_ms, dom_ms = [], []
        for _ in range(runs):
            page.goto(f"{base}/ui/measurements/{mid}", wait_until="load")
            timing = page.evaluate(
                "() => { const t = performance.getEntriesByType('navigation')[0];"
                " return [t.domContentLoadedEventEnd - t.startTime, t.loadEventEnd - t.startTime]; }")
            dom_ms.append(float(timing[0]))
            load_ms.append(float(timing[1]))
        browser.close()
    print(f"browser, DOMContentLoaded: {stats(dom_ms)}")
    print(f"browser, load event:       {stats(load_ms)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=4096)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--no-browser", action="store_true")
    args = p.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="ne-bench-ui-"))
    url = f"sqlite:///{data_dir / 'neural-entropy.sqlite3'}"
    key, mid = setup_database(url, args.points)
    engine_for(url).dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL",
                                                            "ARTIFACT_DIR")}
    env.update(DATA_DIR=str(data_dir), DATABASE_URL=url)
    log = (data_dir / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # slow starts on shared machines
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the API did not start:\n" + (data_dir / "api.log").read_text())
            time.sleep(0.2)
        print(f"measurement with {args.points} curve points; {args.runs} runs; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        bench_server(base, key, mid, args.runs)
        if not args.no_browser:
            bench_browser(base, key, mid, args.runs)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
