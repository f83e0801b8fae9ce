"""Diffusers pipelines as forward processes: the numbers in docs/diffusers.md.

1. `stot`: S_tot (nats, deterministic grid rule) on the paper's 2-D mixture for the tabulated
   linear schedule (DiscreteVP: beta 1e-4 .. 0.02, T = 1000) and its continuous limit
   VP(beta_min = T beta_start = 0.1, beta_max = T beta_end = 20), on the same interval [1/T, 1]
   and on VP's own [1e-5, 1]; the same for scaled_linear and the cosine schedule against
   vp_cosine where that applies.
2. `timesteps`: the cost of feeding fractional timesteps. A tiny UNet2DModel trained with diffusers'
   DDPM loop on the 8x8 digits (tests/pipelines.py) is asked for the noise at integer timesteps
   and at half-integer ones (s = (k + 1.5) / T, between two training steps): the denoising MSE
   E||eps_hat - eps||^2 / D at each, and S_NN measured with timestep_input "float" against
   "round" (same seed, same draws), with the wall time of each.

    .venv/bin/python bench/bench_diffusers.py            # both, about a minute on 2 CPU cores
    .venv/bin/python bench/bench_diffusers.py --only stot
    .venv/bin/python bench/bench_diffusers.py --only timesteps --pipeline ddpm-digits.zip
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import GaussianMixture  # noqa: E402
from models.entropy.estimators import MeasurementConfig, neural_entropy, total_entropy_mixture_exact  # noqa: E402
from models.processes import VP, DiscreteVP, VPCosine  # noqa: E402


def bench_stot() -> None:
    mixture = GaussianMixture.paper(5, 2, seed=0)
    T = 1000
    pairs = [
        ("linear", DiscreteVP("linear", 1e-4, 0.02, T), VP(beta_min=T * 1e-4, beta_max=T * 0.02)),
    ]
    for name, disc, cont in pairs:
        for lo in (1.0 / T, 0.5 / T):
            if lo < disc.t_min:
                continue
            a = total_entropy_mixture_exact(mixture, disc, 1.0, t_start=lo)
            b = total_entropy_mixture_exact(mixture, cont, 1.0, t_start=lo)
            print(json.dumps({"bench": "stot", "schedule": name, "interval": [lo, 1.0], "discrete_nats": a,
                              "vp_nats": b, "difference_nats": a - b, "relative": (a - b) / b}))
        full = total_entropy_mixture_exact(mixture, cont, 1.0, t_start=cont.t_min)
        print(json.dumps({"bench": "stot", "schedule": name, "process": cont.spec(), "interval": [cont.t_min, 1.0],
                          "vp_nats": full}))
    cos = DiscreteVP("squaredcos_cap_v2", 1e-4, 0.02, T)
    ref = VPCosine(kappa=1.0, c=0.008)
    a = total_entropy_mixture_exact(mixture, cos, ref.t_max, t_start=cos.t_min)
    b = total_entropy_mixture_exact(mixture, ref, ref.t_max, t_start=cos.t_min)
    print(json.dumps({"bench": "stot", "schedule": "squaredcos_cap_v2", "interval": [cos.t_min, ref.t_max],
                      "discrete_nats": a, "vp_cosine_nats": b, "difference_nats": a - b, "relative": (a - b) / b}))


def bench_timesteps(steps: int, n_samples: int, pipeline: Path | None) -> None:
    from sklearn.datasets import load_digits

    from models.checkpoints.io import load_model
    from models.pipelines.archive import ArchiveLimits, read_pipeline
    from models.pipelines.convert import pipeline_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        archive = pipeline
        if archive is None:  # train one: diffusers' DDPM loop, tests/pipelines.py
            from tests.pipelines import train_digits_pipeline, zip_folder

            t0 = time.perf_counter()
            folder, losses = train_digits_pipeline(Path(tmp) / "p", steps=steps)
            print(json.dumps({"bench": "train", "steps": steps, "seconds": time.perf_counter() - t0,
                              "loss_first": losses[0], "loss_last": losses[-1]}))
            archive = Path(tmp) / "p.zip"
            archive.write_bytes(zip_folder(folder))
        files = read_pipeline(archive, ArchiveLimits())
        config, tensors, n_params = pipeline_checkpoint(files, max_parameters=10**8, max_bytes=10**9)
    print(json.dumps({"bench": "pipeline", "source": str(pipeline or "trained here"), "parameters": n_params}))
    x = torch.from_numpy(load_digits().images.astype("float32") / 16.0 * 2.0 - 1.0).unsqueeze(1)
    models = {}
    for mode in ("float", "round"):
        cfg = dataclasses.replace(config, network={**config.network, "timestep_input": mode})
        models[mode] = load_model((cfg, tensors))
    process = config.build_process()
    T = process.num_train_timesteps  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    ks = torch.arange(0, T - 1, 7)
    mse = {"integer": 0.0, "half_integer_float": 0.0, "half_integer_round": 0.0}
    with torch.no_grad():
        for k in ks.tolist():
            idx = torch.randint(0, len(x), (256,), generator=gen)
            x0 = x[idx]
            eps = torch.randn(x0.shape, generator=gen)
            for name, s_val, mode in (("integer", (k + 1) / T, "float"), ("half_integer_float", (k + 1.5) / T, "float"),
                                      ("half_integer_round", (k + 1.5) / T, "round")):
                s = torch.full((len(x0),), s_val)
                y = process.perturb(x0, s, eps)
                eps_hat = models[mode].noise(y, s)
                mse[name] += float(((eps_hat - eps) ** 2).mean()) / len(ks)
    print(json.dumps({"bench": "timesteps", "denoising_mse": mse, "timesteps_checked": len(ks)}))
    held = x[-360:]
    for mode in ("float", "round"):
        t0 = time.perf_counter()
        with torch.no_grad():
            r = neural_entropy(models[mode].e_theta, process, held, MeasurementConfig(n_times=33, n_samples=n_samples,
                                                                                         seed=0))
        print(json.dumps({"bench": "s_nn", "timestep_input": mode, "nats": r.total.mean, "stderr": r.total.stderr,
                          "n_evaluations": r.n_evaluations, "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["stot", "timesteps"])
    ap.add_argument("--steps", type=int, default=300, help="DDPM training steps of the digits UNet")
    ap.add_argument("--n-samples", type=int, default=8192, help="S_NN budget (network evaluations)")
    ap.add_argument("--pipeline", type=Path, help="a pipeline .zip to use instead of training one "
                    "(e.g. examples/diffusers_digits.py's ddpm-digits.zip)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.only in (None, "stot"):
        bench_stot()
    if a.only in (None, "timesteps"):
        bench_timesteps(a.steps, a.n_samples, a.pipeline)


if __name__ == "__main__":
    main()
