"""Training recipes against the exact S_tot on Gaussian mixtures none of the defaults were tuned on.

For every (mixture, process, recipe): the default network for the data (the paper MLP), 8192
training draws, and S_NN measured after EVERY epoch on fresh held-out draws of the mixture (the
service's estimator, 32768 evaluations, one fixed seed). S_tot is the exact-score Monte Carlo
integral on the same time range (2^20 evaluations; its stderr is printed). Prints one JSON line
per run and a table: S_NN / S_tot at the report epochs, and the first epoch (and training wall
time) from which S_NN stays within 5 % of S_tot up to the last epoch.

Recipes are the service's (`core.contract.TRAINING_RECIPES`), optionally with overrides
(`name:key=value;key=value`), or `variant=<json>` for a recipe of the TrainingConfig fields given.

    .venv/bin/python bench/bench_recipes.py                                   # the full table
    .venv/bin/python bench/bench_recipes.py --mixtures 2:3:7 --processes vp --recipes converged \
        --epochs 40 --report 10,20,40                                         # one run
    .venv/bin/python bench/bench_recipes.py --epochs 2 --report 1,2 --n-data 1024   # smoke
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.contract import TRAINING_RECIPES  # noqa: E402
from models.data import GaussianMixture  # noqa: E402
from models.entropy.estimators import MeasurementConfig, neural_entropy, total_entropy_mixture  # noqa: E402
from models.networks import build_network, default_network_config  # noqa: E402
from models.parametrization import EntropyMatchingModel  # noqa: E402
from models.processes import VP, ForwardProcess  # noqa: E402
from models.training import NoHooks, TrainingConfig, TrainingState, train  # noqa: E402
from models.training.convergence import TrajectoryPoint, convergence_verdict, evaluation_epochs  # noqa: E402

PROCESSES: dict[str, ForwardProcess] = {"vp": VP(), "vpx": VP(kappa=0.1)}
TOLERANCE = 0.05


def recipe_config(spec: str) -> tuple[str, dict[str, Any]]:
    """(label, TrainingConfig fields) of `name`, `name:key=value;...` or `label=<json>`."""
    if "=" in spec.split(":")[0]:
        label, _, doc = spec.partition("=")
        return label, json.loads(doc)
    name, _, overrides = spec.partition(":")
    fields = dict(TRAINING_RECIPES[name])
    for item in filter(None, overrides.split(";")):
        key, _, value = item.partition("=")
        fields[key] = json.loads(value)
    return spec, fields


def run(task: dict[str, Any]) -> dict[str, Any]:
    """Train one (mixture, process, recipe) and measure after every epoch (runs in a child)."""
    torch.set_num_threads(task["threads"])
    dim, k, seed = task["mixture"]
    mixture = GaussianMixture.paper(n_components=k, dim=dim, seed=seed)
    process = PROCESSES[task["process"]]
    data = mixture.as_dataset(task["n_data"], seed=seed)
    pool = mixture.sample(10_000, torch.Generator().manual_seed(1_000_003 + seed))
    assert isinstance(pool, torch.Tensor)
    mcfg = MeasurementConfig(n_samples=32768, seed=1)
    total = total_entropy_mixture(mixture, process, MeasurementConfig(n_samples=2**20, seed=2))
    s_tot = total.total.mean
    label, fields = recipe_config(task["recipe"])
    parametrization = fields.pop("parametrization", "entropy_matching")
    fields = {**fields, "epochs": task["epochs"], "seed": seed,
              "milestones": tuple(range(1, task["epochs"] + 1))}
    config = TrainingConfig.from_dict(fields)
    rows: list[dict[str, Any]] = []
    clock = {"train": 0.0, "mark": time.perf_counter()}

    class EveryEpoch(NoHooks):
        def on_milestone(self, epoch: int, network: torch.nn.Module, state: TrainingState) -> None:
            now = time.perf_counter()
            clock["train"] += now - clock["mark"]
            model = EntropyMatchingModel(network, process, parametrization)
            res = neural_entropy(model.e_theta, process, pool, mcfg)
            rows.append({"epoch": epoch, "nats": res.total.mean, "stderr": res.total.stderr,
                         "ratio": res.total.mean / s_tot, "train_seconds": round(clock["train"], 1)})
            clock["mark"] = time.perf_counter()

    network = build_network(default_network_config((dim,), None, seed))
    train(network, process, data, config, parametrization=parametrization, hooks=EveryEpoch())
    stays = None
    for i in range(len(rows)):
        if all(abs(r["ratio"] - 1) <= TOLERANCE for r in rows[i:]):
            stays = rows[i]
            break
    return {"mixture": f"D{dim} K{k} seed{seed}", "process": task["process"], "recipe": label,
            "S_tot": s_tot, "S_tot_stderr": total.total.stderr, "rows": rows,
            "stays_within": None if stays is None else
            {"epoch": stays["epoch"], "train_seconds": stays["train_seconds"]}}


def verdicts(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[int]]:
    """The verdict a train job would give after each of its evaluation epochs, from these
    estimates: (the first `converged` one: epoch and ratio, epochs where it said `converged`
    while S_NN was more than 5 % off S_tot)."""
    by_epoch = {r["epoch"]: r for r in rows}
    last = max(by_epoch, default=0)
    first, wrong = None, []
    points: list[TrajectoryPoint] = []
    for epoch in evaluation_epochs(last):
        r = by_epoch[epoch]
        points.append(TrajectoryPoint(epoch, r["nats"], r["stderr"]))
        if convergence_verdict(points).verdict != "converged":
            continue
        first = first or {"epoch": epoch, "ratio": r["ratio"]}
        if abs(r["ratio"] - 1) > TOLERANCE:
            wrong.append(epoch)
    return first, wrong


def table(results: list[dict[str, Any]], report: list[int]) -> str:
    head = ["mixture", "process", "recipe", "S_tot"] + [f"@{e}" for e in report] + [
        "stays within 5 %", "first 'converged' (ratio)", "'converged' while > 5 % off"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        by_epoch = {row["epoch"]: row["ratio"] for row in r["rows"]}
        cells = [r["mixture"], r["process"], r["recipe"], f"{r['S_tot']:.4f}"]
        cells += [f"{by_epoch[e]:.3f}" if e in by_epoch else "" for e in report]
        s = r["stays_within"]
        cells.append("never" if s is None else f"epoch {s['epoch']} ({s['train_seconds']:.0f} s)")
        first, wrong = verdicts(r["rows"])
        cells.append("never" if first is None else f"epoch {first['epoch']} ({first['ratio']:.3f})")
        cells.append(", ".join(map(str, wrong)) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mixtures", default="2:3:7,2:5:11,3:4:13",
                   help="comma-separated dim:components:seed of GaussianMixture.paper")
    p.add_argument("--processes", default="vp,vpx")
    p.add_argument("--recipes", default="paper,converged", help="comma-separated; see the doc")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--report", default="10,20,40,80")
    p.add_argument("--n-data", type=int, default=8192)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    p.add_argument("--json", help="write every run here")
    p.add_argument("--from-json", help="only print the table of runs saved by --json "
                   "(comma-separated files are put in one table)")
    args = p.parse_args()
    if args.from_json:
        runs = [r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())]
        print(table(runs, [int(e) for e in args.report.split(",")]))
        return
    tasks = [{"mixture": tuple(int(v) for v in m.split(":")), "process": proc, "recipe": rec,
              "epochs": args.epochs, "n_data": args.n_data, "threads": 1}
             for m in args.mixtures.split(",") for proc in args.processes.split(",")
             for rec in args.recipes.split(",")]
    results = []
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        for result in pool.map(run, tasks):
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "rows"}
                             | {"ratios": {r["epoch"]: round(r["ratio"], 4) for r in result["rows"]}}),
                  flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    print(table(results, [int(e) for e in args.report.split(",")]))


if __name__ == "__main__":
    main()
