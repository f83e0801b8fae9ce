"""Training throughput of the paper MLP against the machine's matmul rate, measured in the same run.

The real `models.training.train` loop (paper MLP, D = 2, batch 40, num_steps 10 -> 400 throws per
Adam step, float32) runs on an 8192-point mixture; every `--window` steps its progress callback
runs a few 2048 x 2048 float32 matmuls.  Training windows (callback time excluded) and matmul
windows alternate, so both see the same machine state.  On a shared machine the paired median,
the median over "clean" rounds (matmul window >= 90 % of the best one) and best-vs-best are printed.

FLOPs are counted the usual way: 2 * in * out per dense layer per throw for the forward pass
(`MLPConfig.flops_per_evaluation()`, 2.624 MFLOP at D = 2) and 3x that for forward + backward.
(The backward pass of the two embedding layers needs no input gradient, so the work actually
done is ~2.6x; the 3x convention is what the percentages use.)

    .venv/bin/python bench/bench_training.py                 # CPU, all cores
    .venv/bin/python bench/bench_training.py --rounds 30 --device cuda
    .venv/bin/python bench/bench_training.py --reference     # also the plain-autograd network
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import GaussianMixture  # noqa: E402
from models.networks import MLPConfig, build_network  # noqa: E402
from models.processes import VP  # noqa: E402
from models.training import NoHooks, ProgressEvent, TrainingCanceled, TrainingConfig, train  # noqa: E402


def matmul_rate(device: torch.device, n: int = 2048, reps: int = 4) -> float:
    """GFLOP/s of n x n float32 matmuls (2 n^3 per product)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def measure(device: torch.device, rounds: int, window: int, fused: bool) -> dict[str, float | str]:
    net_config = MLPConfig(dim=2, fused=fused)
    flops_per_throw = 3 * net_config.flops_per_evaluation()
    data = GaussianMixture.paper(n_components=5, dim=2, seed=0).as_dataset(8192, seed=0)
    config = TrainingConfig(epochs=1000, batch_size=40, lr=1e-4, num_steps=10, seed=0)
    throws_per_step = config.batch_size * config.num_steps
    train_rates: list[float] = []
    mm_rates: list[float] = []
    mm_device = device if device.type == "cuda" else torch.device("cpu")

    class Windows(NoHooks):
        """Times each window of `window` steps, then runs the matmuls; stops after `rounds` windows."""

        progress_every = window

        def __init__(self) -> None:
            self.window_start, self.last_step, self.events = 0.0, 0, 0

        def on_progress(self, event: ProgressEvent) -> None:
            entered = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.synchronize()
                entered = time.perf_counter()
            steps = event.global_step - self.last_step
            if self.events > 0 and steps == window:  # skip the warm-up window and epoch ends
                train_rates.append(steps * throws_per_step / (entered - self.window_start))
                mm_rates.append(matmul_rate(mm_device))
            self.events += 1
            self.last_step = event.global_step
            self.window_start = time.perf_counter()

        def should_stop(self) -> bool:
            return len(train_rates) >= rounds

    try:
        train(build_network(net_config), VP(), data, config, device=device, hooks=Windows())
    except TrainingCanceled:
        pass  # stopped after `rounds` windows
    paired = [t * flops_per_throw / 1e9 / m for t, m in zip(train_rates, mm_rates, strict=True)]
    # rounds whose matmul window ran at >= 90 % of the best one: the machine was not shared then
    clean = [r for r, m in zip(paired, mm_rates, strict=True) if m >= 0.9 * max(mm_rates)]
    med_t, best_t = statistics.median(train_rates), max(train_rates)
    med_m, best_m = statistics.median(mm_rates), max(mm_rates)
    return {
        "network": "paper MLP (fused)" if fused else "paper MLP (autograd reference)",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "throws_per_second_median": round(med_t),
        "throws_per_second_best": round(best_t),
        "gflops_median": round(med_t * flops_per_throw / 1e9, 1),
        "gflops_best": round(best_t * flops_per_throw / 1e9, 1),
        "matmul_gflops_median": round(med_m, 1),
        "matmul_gflops_best": round(best_m, 1),
        "percent_of_matmul_paired_median": round(100 * statistics.median(paired), 1),
        "percent_of_matmul_clean_rounds_median": round(100 * statistics.median(clean), 1),
        "clean_rounds": len(clean),
        "percent_of_matmul_best_vs_best": round(100 * best_t * flops_per_throw / 1e9 / best_m, 1),
        "mflop_per_throw": flops_per_throw / 1e6,
        "rounds": len(train_rates),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, or both")
    p.add_argument("--rounds", type=int, default=15, help="training/matmul window pairs")
    p.add_argument("--window", type=int, default=40, help="optimizer steps per training window")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    p.add_argument("--reference", action="store_true", help="also time the plain-autograd network")
    args = p.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    for name in devices:
        if name == "cuda" and not torch.cuda.is_available():
            print(json.dumps({"device": "cuda", "skipped": "not available"}))
            continue
        for fused in (True, False) if args.reference else (True,):
            print(json.dumps(measure(torch.device(name), args.rounds, args.window, fused)), flush=True)


if __name__ == "__main__":
    main()
