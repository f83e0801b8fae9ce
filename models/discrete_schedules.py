"""The beta tables of discrete-time diffusion schedulers (diffusers' DDPMScheduler/DDIMScheduler).

A discrete scheduler with T training steps noises step k (k = 0 .. T-1) as
    x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps,   abar_k = prod_{i <= k} (1 - beta_i).
The tables below are computed exactly as diffusers 0.42 computes them (float32 betas, float32
cumulative product), so `alphas_cumprod` equals `DDPMScheduler(...).alphas_cumprod` bit for bit
(tests/models/test_discrete_schedules.py checks it against diffusers itself):

- `linear`:            beta = linspace(beta_start, beta_end, T)
- `scaled_linear`:     beta = linspace(sqrt(beta_start), sqrt(beta_end), T)^2
- `squaredcos_cap_v2`: beta_k = min(1 - abar(k+1/T) / abar(k/T), 0.999) with the cosine
                       abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2 (beta_start/end unused)

`models.processes.DiscreteVP` turns a table into a continuous forward process (docs/diffusers.md).
Pure torch; no diffusers import.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)
MAX_TRAIN_TIMESTEPS = 100_000
COSINE_MAX_BETA = 0.999


def betas(schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    """The float32 betas (T,) of a schedule, as diffusers computes them; ValueError if unknown."""
    n = int(num_train_timesteps)
    if not 2 <= n <= MAX_TRAIN_TIMESTEPS:
        raise ValueError(f"num_train_timesteps must lie in 2..{MAX_TRAIN_TIMESTEPS}, got {num_train_timesteps}")
    if schedule == "linear":
        out = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif schedule == "scaled_linear":
        out = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    elif schedule == "squaredcos_cap_v2":
        out = torch.tensor(_cosine_betas(n), dtype=torch.float32)
    else:
        raise ValueError(f"unknown beta_schedule {schedule!r}; expected one of {BETA_SCHEDULES}")
    if not (bool(torch.isfinite(out).all()) and float(out.min()) > 0 and float(out.max()) < 1):
        raise ValueError(f"the {schedule} betas must lie in (0, 1); got [{float(out.min()):g}, {float(out.max()):g}]")
    return out


def _cosine_betas(n: int) -> list[float]:
    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - abar((i + 1) / n) / abar(i / n), COSINE_MAX_BETA) for i in range(n)]


def alphas_cumprod(schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    """abar_k (T,), float32: the scheduler's `alphas_cumprod` exactly."""
    return torch.cumprod(1.0 - betas(schedule, beta_start, beta_end, num_train_timesteps), dim=0)


def log_snr_table(schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    """lambda_k = ln(abar_k / (1 - abar_k)) (T,), float64, from the float32 table; decreasing."""
    abar = alphas_cumprod(schedule, beta_start, beta_end, num_train_timesteps).to(torch.float64)
    lam = torch.log(abar) - torch.log1p(-abar)
    if not bool(torch.isfinite(lam).all()) or not bool((lam[1:] < lam[:-1]).all()):
        raise ValueError("the schedule's log-SNR table must be finite and strictly decreasing")
    return lam
