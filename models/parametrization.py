"""Reading a network's output as e_theta, a score or a noise prediction (docs/math.md §2.3).

Networks know nothing of processes; `EntropyMatchingModel` is where a network meets one.

    entropy_matching:         e_theta = net(y, s),          score = grad log p_eq(y, s) + e_theta
    scaled_entropy_matching:  e_theta = net(y, s) / k^2     (k^2 the equilibrium variance; 1 if flat)
    score:                    score   = net(y, s),          e_theta = score - grad log p_eq(y, s)
    noise:                    eps     = net(y, s),          score = -eps / Sigma(s)
    v_prediction:             v       = net(y, s) = mu eps - Sigma x0   (diffusers' v)
    sample:                   x0_hat  = net(y, s),          score = (mu x0_hat - y) / Sigma^2

Every prediction type (score, noise, v_prediction, sample) is converted in one place,
`models.pipelines.adapter`; this module only adds the entropy-matching ones.

`scaled_entropy_matching` is entropy matching in the equilibrium's own units: the equilibrium score
is -y / k^2, so with a narrow equilibrium (VPx, SL: k = 0.1) e_theta is about 1/k^2 = 100 times
larger than the network's natural O(1) outputs, and a network that must output it directly learns
it 100 times too slowly (docs/math.md §2.3). For k = 1 the two are the same.

The training residual (docs/math.md §2.2) is r = Sigma(s) * score + z; `scaled_score` returns
Sigma * score without dividing by Sigma for the noise parametrization (it is -eps exactly), so no
precision is lost near s = 0.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from models.pipelines import adapter
from models.processes import ForwardProcess
from models.tensors import append_dims

Parametrization = Literal["entropy_matching", "scaled_entropy_matching", "score", "noise", "v_prediction", "sample"]
ENTROPY_MATCHING = ("entropy_matching", "scaled_entropy_matching")
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
        self.e_scale = e_theta_scale(process, parametrization)
        config = getattr(network, "config", None)
        # an unconditional network (num_classes None) is read without labels, even on labelled data
        classes = getattr(config, "num_classes", None)
        if classes is None:  # a diffusers UNet2DModel's config names it num_class_embeds
            classes = getattr(config, "num_class_embeds", None)
        self.takes_labels = config is None or classes is not None

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.e_theta(y, s, labels)

    def _net(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.network(y, s, labels if self.takes_labels else None)

    def e_theta(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """e_theta(y, s) ~ grad log p_s - grad log p_eq, shape of y (B, ...)."""
        out = self._net(y, s, labels)
        if self.parametrization in ENTROPY_MATCHING:
            return out * self.e_scale if self.e_scale != 1.0 else out
        return adapter.e_theta(self.parametrization, out, y, s, self.process)

    def score(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's grad log p_s(y), shape of y (B, ...)."""
        if self.parametrization in ENTROPY_MATCHING:
            return self.process.equilibrium_score(y, s) + self.e_theta(y, s, labels)
        return self._score_from(self._net(y, s, labels), y, s)

    def noise(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's noise prediction eps = -Sigma(s) * score, shape of y (B, ...)."""
        return -self.scaled_score(y, s, append_dims(self.process.std(s), y.ndim), labels)

    def scaled_score(
        self, y: torch.Tensor, s: torch.Tensor, std: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigma(s) * score, with `std` = Sigma(s) already broadcast to y's rank (B, 1, ...)."""
        if self.parametrization in ENTROPY_MATCHING:
            return std * (self.process.equilibrium_score(y, s) + self.e_theta(y, s, labels))
        out = self._net(y, s, labels)
        mu = append_dims(self.process.mean_scale(s), y.ndim)
        return adapter.scaled_score(self.parametrization, out, y, mu, std)

    def _score_from(self, out: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        mu, std = adapter.coefficients(self.process, s, y.ndim)
        return adapter.score(self.parametrization, out, y, mu, std)


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
    if parametrization not in ENTROPY_MATCHING:
        mu, std = adapter.coefficients(process, s, y.ndim)
        return adapter.residual_affine(parametrization, y, z, mu, std)
    std = append_dims(process.std(s), y.ndim)
    scale = e_theta_scale(process, parametrization)  # entropy matching: e_theta = scale * net
    return std * scale if scale != 1.0 else std, z + std * process.equilibrium_score(y, s)


def e_theta_scale(process: ForwardProcess, parametrization: Parametrization) -> float:
    """e_theta = scale * net for the entropy-matching parametrizations: 1, or 1 / k^2 when scaled."""
    k2 = process.equilibrium_variance()
    return 1.0 / k2 if parametrization == "scaled_entropy_matching" and k2 else 1.0
