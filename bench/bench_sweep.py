"""A sweep over the training-set size, driven through the API end to end (POST /v1/sweeps, poll,
GET the table, fits and plot), as a client script would.

    .venv/bin/python bench/bench_sweep.py mixture      # the README example (2-D mixture, VP)
    .venv/bin/python bench/bench_sweep.py digits       # built-in 8x8 digits, VP and SL
    .venv/bin/python bench/bench_sweep.py digits --url http://127.0.0.1:8000 --key KEY

Without --url it starts, in a temporary DATA_DIR on a free port, what `make run` starts (SQLite,
the bundled Redis, one worker, the API) and stops it at the end; the jobs then run one after
another (a service with more workers runs them in parallel). Presets:

- mixture: the paper's kind of 2-D mixture (5 components), 16384 samples drawn once; N in
  {256, 1024, 4096, 16384} (nested subsets), seeds {0, 1}, VP; held out: fresh mixture draws, so
  S_tot is exact. The default training recipe with 20 epochs of the largest N for every size
  (training_budget "steps": 8200 optimizer steps each). A smaller MLP than the paper's (width 128,
  hidden [128, 64], 64 Fourier features) keeps it within minutes on two CPU cores.
- digits: scikit-learn's 8x8 digits (1617 training images, 180 held out, labels), N in
  {100, 200, 400, 800, 1617} (class-balanced nested subsets), VP and SL, seed 0; a compact U-Net;
  the default recipe with a peak lr of 1e-3 and 60 epochs of the largest N for every size
  (training_budget "steps": 2460 optimizer steps each).

Prints the request, the wall time from POST to the final status and the summed compute time of
the jobs, the table (one row per N, process and epoch; S_NN in nats), the fits
S_NN = a + b ln N, and writes sweep.json, table.csv and plot.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_service_overhead import embedded_stack

PRESETS: dict[str, dict[str, Any]] = {
    "mixture": {
        "dataset": {"kind": "gaussian_mixture", "n_components": 5, "dim": 2,
                    "n_samples": 16384, "seed": 0},
        "sweep": {
            "base": {"network": {"arch": "mlp", "width": 128, "hidden_widths": [128, 64],
                                 "fourier_features": 64},
                     "training": {"epochs": 20},
                     "measurement": {"n_times": 64, "n_samples": 32768}},
            "grid": {"n_train": [256, 1024, 4096, 16384], "seed": [0, 1]},
            "training_budget": "steps",
        },
    },
    "digits": {
        "dataset": {"kind": "digits"},
        "sweep": {
            "base": {"network": {"arch": "unet", "base_channels": 16},
                     "training": {"epochs": 60, "lr": 1e-3},
                     "measurement": {"n_times": 32, "n_samples": 8192}},
            "grid": {"n_train": [100, 200, 400, 800, 1617],
                     "process": [{"kind": "vp"}, {"kind": "sl"}]},
            "training_budget": "steps",
        },
    },
}
FINAL = {"succeeded", "partial", "failed", "canceled"}


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def print_table(doc: dict[str, Any]) -> None:
    print(f"{'N':>6} {'process':>8} {'epoch':>5} {'seeds':>5} {'S_NN mean':>10} {'spread':>8} "
          f"{'stderr':>8} {'S_tot':>8} {'bits/dim':>8}")
    for r in doc["table"]:
        print(f"{r['n_train']:>6} {r['process']:>8} {r['epoch']:>5} {r['n_seeds']:>5} "
              f"{r['mean']:>10.4f} {_fmt(r['spread'], '.4f'):>8} {r['stderr']:>8.4f} "
              f"{_fmt(r['total_entropy'], '.4f'):>8} {r['bits_per_dim']:>8.4f}")
    for f in doc["fits"]:
        print(f"fit {f['process']}: S_NN = a + b ln N, a = {_fmt(f['a'])} ± {_fmt(f['a_stderr'])}"
              f", b = {_fmt(f['b'])} ± {_fmt(f['b_stderr'])} (from the residuals: "
              f"± {_fmt(f['a_stderr_residual'])}, ± {_fmt(f['b_stderr_residual'])}), "
              f"R² = {_fmt(f['r_squared'], '.4f')}, {f['n_points']} sizes"
              + (f"; {f['note']}" if f["note"] else ""))
    for j in doc["jobs"]:
        if j["status"] == "failed":
            print(f"failed: N={j['n_train']} {j['process']} seed {j['seed']}: {j['error']}")


def run(base: str, key: str, preset: dict[str, Any], out: Path, poll: float) -> None:
    with httpx.Client(base_url=base, timeout=120,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        r = c.post("/v1/datasets", json=preset["dataset"])
        r.raise_for_status()
        dataset = r.json()
        print(f"dataset {dataset['id']}: {dataset['kind']}, {dataset['split']['n_train']} "
              f"training points, held out: {dataset['split']['held_out']} "
              f"({dataset['split']['n_test']})")
        body = json.loads(json.dumps(preset["sweep"]))
        body["base"]["dataset_id"] = dataset["id"]
        print("POST /v1/sweeps", json.dumps(body))
        t0 = time.perf_counter()
        r = c.post("/v1/sweeps", json=body)
        if r.status_code != 202:
            raise SystemExit(f"{r.status_code}: {r.text}")
        location = r.headers["location"]
        print(f"202 Accepted, Location: {location}, {r.json()['counts']['total']} jobs")
        last = ""
        while True:
            doc = c.get(location).json()
            line = f"{doc['status']} {doc['counts']}"
            if line != last:
                print(f"[{time.perf_counter() - t0:7.1f} s] {line}", flush=True)
                last = line
            if doc["status"] in FINAL:
                break
            time.sleep(poll)
        wall = time.perf_counter() - t0
        compute = sum(float(c.get(f"/v1/jobs/{j['id']}").json()["compute_seconds"] or 0.0)
                      for j in doc["jobs"])
        print(f"wall time POST -> {doc['status']}: {wall:.0f} s ({wall / 60:.1f} min); "
              f"jobs' compute time summed: {compute:.0f} s")
        print_table(doc)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(doc, indent=1))
        (out / "table.csv").write_text(c.get(f"{location}/table", params={"format": "csv"}).text)
        (out / "plot.png").write_bytes(c.get(f"{location}/plot.png").content)
        print(f"wrote {out}/sweep.json, table.csv, plot.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", choices=sorted(PRESETS))
    p.add_argument("--url", help="an existing service (default: start an embedded one)")
    p.add_argument("--key", help="API key for --url (or API_KEY)")
    p.add_argument("--epochs", type=int, help="override base.training.epochs")
    p.add_argument("--budget", choices=["epochs", "steps"], help="the sweep's training_budget")
    p.add_argument("--out", type=Path, help="where to write sweep.json, table.csv, plot.png")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between GETs")
    args = p.parse_args()
    preset = json.loads(json.dumps(PRESETS[args.preset]))
    if args.epochs:
        preset["sweep"]["base"]["training"]["epochs"] = args.epochs
    if args.budget:
        preset["sweep"]["training_budget"] = args.budget
    out = args.out or Path(tempfile.mkdtemp(prefix=f"sweep-{args.preset}-"))
    if args.url:
        run(args.url, args.key or os.environ.get("API_KEY", ""), preset, out, args.poll)
        return
    with embedded_stack() as (base, key):
        run(base, key, preset, out, args.poll)


if __name__ == "__main__":
    main()
