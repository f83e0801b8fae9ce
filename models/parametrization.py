"""Reading a network's output as e_theta, a score or a noise prediction (docs/math.md §2.3).

Networks know nothing of processes; `EntropyMatchingModel` is where a network meets one.

    entropy_matching:  e_theta = net(y, s),          score = grad log p_eq(y, s) + e_theta
    score:             score   = net(y, s),          e_theta = score - grad log p_eq(y, s)
    noise:             eps     = net(y, s),          score = -eps / Sigma(s)

The training residual (docs/math.md §2.2) is r = Sigma(s) * score + z; `scaled_score` returns
Sigma * score without dividing by Sigma for the noise parametrization (it is -eps exactly), so no
precision is lost near s = 0.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from models.processes import ForwardProcess
from models.tensors import append_dims

Parametrization = Literal["entropy_matching", "score", "noise"]
PARAMETRIZATIONS: tuple[str, ...] = get_args(Parametrization)


class EntropyMatchingModel(nn.Module):
    """A network plus a process, read through a parametrization; forward(y, s, labels) = e_theta."""

    def __init__(
        self, network: nn.Module, process: ForwardProcess, parametrization: Parametrization = "entropy_matching"
    ) -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        self.network = network
        self.process = process
        self.parametrization: Parametrization = parametrization

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.e_theta(y, s, labels)

    def _net(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.network(y, s, labels)

    def e_theta(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """e_theta(y, s) ~ grad log p_s - grad log p_eq, shape of y (B, ...)."""
        out = self._net(y, s, labels)
        if self.parametrization == "entropy_matching":
            return out
        return self._score_from(out, y, s) - self.process.equilibrium_score(y, s)

    def score(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's grad log p_s(y), shape of y (B, ...)."""
        out = self._net(y, s, labels)
        if self.parametrization == "entropy_matching":
            return self.process.equilibrium_score(y, s) + out
        return self._score_from(out, y, s)

    def noise(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's noise prediction eps = -Sigma(s) * score, shape of y (B, ...)."""
        return -self.scaled_score(y, s, append_dims(self.process.std(s), y.ndim), labels)

    def scaled_score(
        self, y: torch.Tensor, s: torch.Tensor, std: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigma(s) * score, with `std` = Sigma(s) already broadcast to y's rank (B, 1, ...)."""
        out = self._net(y, s, labels)
        if self.parametrization == "noise":
            return -out
        if self.parametrization == "score":
            return std * out
        return std * (self.process.equilibrium_score(y, s) + out)

    def _score_from(self, out: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.parametrization == "score":
            return out
        return -out / append_dims(self.process.std(s), y.ndim)  # noise: score = -eps / Sigma


def affine_residual(
    process: ForwardProcess,
    parametrization: Parametrization,
    y: torch.Tensor,
    s: torch.Tensor,
    z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) with  Sigma(s) * score + z = scale * net(y, s) + offset  (docs/math.md §2.3, residual).

    y, z: (B, ...); s: (B,). scale is (B, 1, ...) and offset (B, ...); the residual is affine in the
    network output, so training can draw them once per chunk of throws.
    """
    std = append_dims(process.std(s), y.ndim)
    if parametrization == "noise":  # Sigma * score = -eps
        return torch.full_like(std, -1.0), z
    if parametrization == "score":
        return std, z
    return std, z + std * process.equilibrium_score(y, s)  # entropy matching
