"""models.parametrization: e_theta / score / noise readings agree with docs/math.md §2.3 closed forms.

The "networks" here are exact: for Gaussian data N(m, h^2) the diffused density is
N(mu m, mu^2 h^2 + Sigma^2), so score, noise and e_theta are known in closed form.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.parametrization import EntropyMatchingModel, affine_residual
from models.processes import SL, VE, VP, ForwardProcess

M, H = 0.7, 0.4  # data mean and std


def exact_score(process: ForwardProcess, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    mu = process.mean_scale(s)[:, None]
    return -(y - mu * M) / (mu**2 * H**2 + process.variance(s)[:, None])


class Exact(nn.Module):
    """Outputs the exact e_theta, score or noise of Gaussian data under `process`."""

    def __init__(self, process: ForwardProcess, kind: str) -> None:
        super().__init__()
        self.process, self.kind = process, kind

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        score = exact_score(self.process, y, s)
        if self.kind == "score":
            return score
        if self.kind == "noise":
            return -self.process.std(s)[:, None] * score
        k2 = self.process.equilibrium_variance()
        e_theta = score + (0.0 if k2 is None else y / k2)  # e_theta = score - grad log p_eq
        if self.kind == "scaled_entropy_matching":  # the network outputs k^2 e_theta
            return e_theta * (1.0 if k2 is None else k2)
        return e_theta


@pytest.mark.parametrize("process", [VP(), VP(kappa=0.1), SL(), VE()], ids=lambda p: p.kind)
@pytest.mark.parametrize("kind", ["entropy_matching", "scaled_entropy_matching", "score", "noise"])
def test_every_reading_gives_the_exact_score_and_e_theta(process: ForwardProcess, kind: str) -> None:
    model = EntropyMatchingModel(Exact(process, kind), process, kind)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    y = torch.randn(64, 3, generator=g, dtype=torch.float64)
    s = process.t_min + (process.t_max - process.t_min) * torch.rand(64, generator=g, dtype=torch.float64)
    score = exact_score(process, y, s)
    k2 = process.equilibrium_variance()
    e_exact = score + (0.0 if k2 is None else y / k2)
    std = process.std(s)[:, None]
    torch.testing.assert_close(model.score(y, s), score, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.e_theta(y, s), e_exact, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(model(y, s), e_exact, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(model.noise(y, s), -std * score, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.scaled_score(y, s, std), std * score, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["entropy_matching", "scaled_entropy_matching", "score", "noise"])
def test_affine_residual_is_sigma_score_plus_z(kind: str) -> None:
    process = VP(kappa=0.1)  # k^2 = 0.01: the scaled reading differs from the plain one
    net = Exact(process, kind)
    g = torch.Generator().manual_seed(1)
    y, z = torch.randn(32, 2, generator=g, dtype=torch.float64), torch.randn(32, 2, generator=g, dtype=torch.float64)
    s = torch.rand(32, generator=g, dtype=torch.float64) * 0.99 + 0.01
    scale, offset = affine_residual(process, kind, y, s, z)  # type: ignore[arg-type]
    expected = process.std(s)[:, None] * exact_score(process, y, s) + z
    torch.testing.assert_close(scale * net(y, s) + offset, expected, rtol=1e-10, atol=1e-10)


def test_noise_reading_matches_epsilon_of_the_perturbation() -> None:
    """For a single data point x0 the exact noise prediction is z itself: (y - mu x0) / Sigma."""
    process = VP()
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    s = torch.tensor([0.3], dtype=torch.float64)
    z = torch.tensor([[0.5, -1.5]], dtype=torch.float64)
    y = process.perturb(x0, s, z)

    class PointNoise(nn.Module):
        def forward(self, y: torch.Tensor, s: torch.Tensor, labels: object = None) -> torch.Tensor:
            return y / process.std(s)[:, None]

    model = EntropyMatchingModel(PointNoise(), process, "noise")
    torch.testing.assert_close(model.score(y, s), -z / process.std(s)[:, None])
    torch.testing.assert_close(model.score(y, s), process.conditional_score(y, x0, s))


def test_unknown_parametrization_is_refused() -> None:
    with pytest.raises(ValueError, match="parametrization"):
        EntropyMatchingModel(nn.Identity(), VP(), "velocity")  # type: ignore[arg-type]


def test_an_unconditional_network_is_read_without_labels_a_conditional_one_with_them() -> None:
    """Labelled data (digits) measured with an unconditional network: the labels are not passed
    (the network would refuse them); a class-conditional network gets them and depends on them."""
    from models.networks import build_network
    from models.networks.unet import UNetConfig

    y, s = torch.randn(6, 1, 8, 8), torch.full((6,), 0.3)
    labels = torch.arange(6) % 3
    plain = build_network(UNetConfig(in_channels=1, image_size=8, base_channels=8, seed=0))
    model = EntropyMatchingModel(plain, VP())
    assert torch.equal(model.e_theta(y, s, labels), model.e_theta(y, s))
    conditional = build_network(UNetConfig(in_channels=1, image_size=8, base_channels=8,
                                           num_classes=3, seed=0))
    cmodel = EntropyMatchingModel(conditional, VP())
    with torch.no_grad():  # a fresh network's class embedding can be zero-initialised
        for p in conditional.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert not torch.allclose(cmodel.e_theta(y, s, labels), cmodel.e_theta(y, s, (labels + 1) % 3))
