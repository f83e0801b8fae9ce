"""Every prediction type read as a score and as e_theta, in one place (docs/diffusers.md §3).

A network of prediction type `kind` outputs `out` for the noisy y = mu(s) x0 + Sigma(s) eps:

    score         out = grad log p_s(y)
    noise         out = eps_hat                        (diffusers "epsilon")
    v_prediction  out = v_hat = mu eps_hat - Sigma x0_hat
    sample        out = x0_hat                         (diffusers "sample")

With E[x0 | y] and E[eps | y] tied by y = mu x0_hat + Sigma eps_hat (Tweedie),
    score = -eps_hat / Sigma = (mu x0_hat - y) / Sigma^2,
and v_hat inverts to eps_hat = (mu v_hat + Sigma y) / (mu^2 + Sigma^2) (= mu v + Sigma y when
mu^2 + Sigma^2 = 1, diffusers' VP case; the general form holds for any of our processes).
e_theta is the entropy-matching form of docs/math.md §2.3: e_theta = score - grad log p_eq(y, s).

`scaled_score` returns Sigma * score without dividing by Sigma where the type allows (noise: it is
-eps_hat exactly), so nothing is lost near s = 0; `residual_affine` writes the training residual
Sigma * score + z as scale * out + offset. mu and Sigma are (B, 1, ...) broadcast to y's rank.
Pure torch: no diffusers import. Used by `models.parametrization.EntropyMatchingModel`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from models.processes import ForwardProcess
from models.tensors import append_dims

PredictionType = Literal["score", "noise", "v_prediction", "sample"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
# diffusers' scheduler `prediction_type` -> ours ("epsilon" is our "noise")
FROM_DIFFUSERS: dict[str, str] = {"epsilon": "noise", "v_prediction": "v_prediction", "sample": "sample"}


def _check(kind: str) -> None:
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"prediction type must be one of {PREDICTION_TYPES}, got {kind!r}")


def coefficients(process: ForwardProcess, s: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mu(s) and Sigma(s) as (B, 1, ...) tensors of rank `ndim`."""
    return append_dims(process.mean_scale(s), ndim), append_dims(process.std(s), ndim)


def scaled_score(kind: str, out: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Sigma(s) * score from the network output `out` (shape of y)."""
    _check(kind)
    if kind == "noise":
        return -out
    if kind == "score":
        return std * out
    if kind == "v_prediction":
        return -(mu * out + std * y) / (mu * mu + std * std)
    return (mu * out - y) / std  # sample


def score(kind: str, out: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """grad log p_s(y) from the network output `out` (shape of y)."""
    _check(kind)
    if kind == "score":
        return out
    if kind == "sample":
        return (mu * out - y) / (std * std)
    return scaled_score(kind, out, y, mu, std) / std


def e_theta(kind: str, out: torch.Tensor, y: torch.Tensor, s: torch.Tensor, process: ForwardProcess) -> torch.Tensor:
    """e_theta = score - grad log p_eq(y, s) (docs/math.md §2.3), shape of y."""
    mu, std = coefficients(process, s, y.ndim)
    return score(kind, out, y, mu, std) - process.equilibrium_score(y, s)


def residual_affine(
    kind: str, y: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) with Sigma * score + z = scale * out + offset (the training residual)."""
    _check(kind)
    if kind == "noise":
        return torch.full_like(std, -1.0), z
    if kind == "score":
        return std, z
    if kind == "v_prediction":
        norm = mu * mu + std * std
        return -mu / norm, z - std * y / norm
    return mu / std, z - y / std  # sample
