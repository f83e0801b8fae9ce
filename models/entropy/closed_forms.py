"""Closed forms and deterministic references for the total entropy S_tot (docs/math.md §3.3), in nats.

For a proper, time-independent equilibrium (VP, VP_cosine, SL), S_tot from t0 to t is
KL(p_t0 || p_eq) - KL(p_t || p_eq) = [h(p_t) - h(p_t0)] + [CE(p_t0) - CE(p_t)] with CE the
cross-entropy E[-log p_eq]; for VE's flat equilibrium CE is 0 and S_tot = h(p_t) - h(p_t0).
For Gaussian mixtures in D <= 2 (docs/math.md §3.4) h(p_s) comes from a grid rule (`mixture_entropy`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from models.data import GaussianMixture
from models.entropy.quadrature import grid_entropy
from models.processes import ForwardProcess


def gaussian_terms(process: ForwardProcess, s: float, mean: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """(h of the Gaussian with the per-coordinate moments of y_s, E[-log p_eq(y_s)]) in nats;
    the cross-entropy is 0 for a flat equilibrium (VE)."""
    tt = torch.tensor([s], dtype=torch.float64)
    mu2, var = float(process.mean_scale(tt) ** 2), float(process.variance(tt))
    v = mu2 * (second - mean**2) + var
    h = 0.5 * float(torch.log(2 * math.pi * math.e * v).sum())
    k2 = process.equilibrium_variance()
    if k2 is None:
        return h, 0.0
    ce = 0.5 * mean.numel() * math.log(2 * math.pi * k2) + float((mu2 * second + var).sum()) / (2 * k2)
    return h, ce


def check_end(process: ForwardProcess, t: float | None, t_start: float) -> float:
    t = process.t_max if t is None else float(t)
    process.check_times(torch.tensor([t], dtype=torch.float64), name="T")
    if not 0.0 <= t_start < t:
        raise ValueError(f"need 0 <= t_start < T, got t_start={t_start}, T={t}")
    return t


def total_entropy_gaussian(
    mean: Any, std: Any, process: ForwardProcess, t: float | None = None, *, t_start: float = 0.0
) -> float:
    """Closed-form S_tot from t_start to t for data N(mean, diag(std^2)) (docs/math.md §3.3), nats:
    KL(p_t0 || p_eq) - KL(p_t || p_eq), or h(p_t) - h(p_t0) for a flat equilibrium (VE)."""
    m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    h = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    if m.shape != h.shape or m.numel() == 0 or not bool((h > 0).all()):
        raise ValueError("mean and std must be non-empty, of equal shape, with std > 0")
    t = check_end(process, t, t_start)
    second = m**2 + h**2
    h0, ce0 = gaussian_terms(process, t_start, m, second)
    h1, ce1 = gaussian_terms(process, t, m, second)
    return (h1 - h0) + (ce0 - ce1)


def total_entropy_mixture_exact(
    mixture: GaussianMixture,
    process: ForwardProcess,
    t: float | None = None,
    *,
    t_start: float = 0.0,
    n_grid: int = 801,
) -> float:
    """Deterministic S_tot for a mixture in D <= 2: entropies by grid quadrature, cross-entropies
    with the equilibrium in closed form (a reference for the Monte Carlo estimators), nats."""
    t = check_end(process, t, t_start)
    mean, second = mixture.mean(), mixture.second_moment()
    ce0 = gaussian_terms(process, t_start, mean, second)[1]
    ce1 = gaussian_terms(process, t, mean, second)[1]
    h0, h1 = mixture_entropy(mixture, process, t_start, n_grid), mixture_entropy(mixture, process, t, n_grid)
    return (h1 - h0) + (ce0 - ce1)


def mixture_entropy(mixture: GaussianMixture, process: ForwardProcess, s: float, n_grid: int = 801) -> float:
    """h(p_s) in nats of the diffused mixture at time s: a tensor-product trapezoid rule with
    n_grid points per axis over the box of +-12 component stds (D <= 2 only; deterministic)."""
    tt = torch.tensor([s], dtype=torch.float64)
    mu, var = float(process.mean_scale(tt)), float(process.variance(tt))
    centers, sd = mu * mixture.means, torch.sqrt(mu**2 * mixture.stds**2 + var)
    lo, hi = (centers - 12 * sd).min(dim=0).values, (centers + 12 * sd).max(dim=0).values
    st = torch.tensor(s, dtype=torch.float64)
    return grid_entropy(lambda y: mixture.log_prob_at(y, st, process), lo, hi, n_grid)
