"""Convergence of S_NN to the exact S_tot on the paper's 2-D mixture (docs/math.md §5).

Paper MLP, GaussianMixture.paper(5 components, D = 2), 8192 training draws, VP(kappa = 1), batch 40,
lr 1e-4, num_steps 10.  For each variant it trains once and measures S_NN at the milestones on fresh
held-out mixture draws; S_tot is the deterministic grid value (models.entropy.estimators).  Prints one JSON
line per milestone and a summary (first epoch and wall time within 10 % of S_tot).

    .venv/bin/python bench/bench_convergence.py --epochs 100 --variants baseline,ema
    .venv/bin/python bench/bench_convergence.py --epochs 2 --milestones 1,2 --n-data 1024   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import GaussianMixture  # noqa: E402
from models.entropy.estimators import MeasurementConfig, neural_entropy, total_entropy_mixture_exact  # noqa: E402
from models.networks import MLPConfig, build_network  # noqa: E402
from models.parametrization import EntropyMatchingModel  # noqa: E402
from models.processes import VP  # noqa: E402
from models.training import NoHooks, TrainingConfig, TrainingState, train  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},  # the paper: constant lr 1e-4, unit weighting, live weights
    "ema": {"ema_decay": 0.999},
    "cosine": {"lr_schedule": "cosine"},
    "ema_cosine": {"ema_decay": 0.999, "lr_schedule": "cosine"},
    "likelihood": {"weighting": "likelihood"},
    "clip": {"grad_clip": 1.0},
}


def run_variant(
    name: str, args: argparse.Namespace, mixture: GaussianMixture, s_tot: float, out: list[dict[str, Any]]
) -> dict[str, Any]:
    process = VP()
    data = mixture.as_dataset(args.n_data, seed=args.seed)
    held_out = mixture.sample(args.n_pool, torch.Generator().manual_seed(10_000 + args.seed))
    assert isinstance(held_out, torch.Tensor)
    milestones = tuple(int(m) for m in args.milestones.split(",") if int(m) <= args.epochs)
    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=40,
        lr=1e-4,
        num_steps=10,
        seed=args.seed,
        milestones=milestones,
        **VARIANTS[name],
    )
    mcfg = MeasurementConfig(n_samples=args.eval_samples, seed=1)
    started = time.perf_counter()
    train_seconds = [0.0]
    mark = [started]

    class Milestones(NoHooks):
        """Measures S_NN at each milestone; the measuring time is not counted as training time."""

        def on_milestone(self, epoch: int, network: torch.nn.Module, state: TrainingState) -> None:
            now = time.perf_counter()
            train_seconds[0] += now - mark[0]
            model = EntropyMatchingModel(network, process)
            with torch.inference_mode():
                res = neural_entropy(lambda y, s, lab: model.e_theta(y, s, lab), process, held_out, mcfg)
            row = {
                "variant": name,
                "epoch": epoch,
                "S_NN": res.total.mean,
                "stderr": res.total.stderr,
                "S_tot": s_tot,
                "ratio": res.total.mean / s_tot,
                "train_seconds": round(train_seconds[0], 1),
                "loss": state.losses[-1],
            }
            out.append(row)
            print(json.dumps(row), flush=True)
            mark[0] = time.perf_counter()

    network = build_network(MLPConfig(dim=2, seed=args.seed))
    result = train(network, process, data, config, hooks=Milestones())
    rows = [r for r in out if r["variant"] == name]
    within = [r for r in rows if abs(r["ratio"] - 1.0) <= 0.10]
    return {
        "variant": name,
        "epochs": args.epochs,
        "throws_per_second": round(result.throws_per_second),
        "first_within_10pct": None
        if not within
        else {"epoch": within[0]["epoch"], "train_seconds": within[0]["train_seconds"]},
        "final_ratio": rows[-1]["ratio"] if rows else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--milestones", default="1,2,3,5,7,10,15,20,30,40,50,75,100,150,200")
    p.add_argument("--variants", default="baseline,ema,cosine,likelihood")
    p.add_argument("--n-data", type=int, default=8192)
    p.add_argument("--n-pool", type=int, default=65536, help="held-out draws for measuring")
    p.add_argument("--eval-samples", type=int, default=65536, help="network evaluations per S_NN")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="write all rows and summaries here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mixture = GaussianMixture.paper(n_components=5, dim=2, seed=args.seed)
    s_tot = total_entropy_mixture_exact(mixture, VP())
    print(json.dumps({"S_tot": s_tot, "mixture": mixture.to_dict()}), flush=True)
    rows: list[dict[str, Any]] = []
    summaries = []
    for name in args.variants.split(","):
        summaries.append(run_variant(name, args, mixture, s_tot, rows))
        print(json.dumps({"summary": summaries[-1]}), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"S_tot": s_tot, "rows": rows, "summaries": summaries}, indent=1))


if __name__ == "__main__":
    main()
