"""Where x0 comes from (`Source`: a data pool or a Gaussian mixture) with the exact moments that
make control variates possible, and the generic control variates of `models.entropy.montecarlo`.

Control variates must have exactly known means. For functions of y = mu x0 + Sigma z these follow
from the source's moments of x0 (pool averages, or a mixture's closed form) and z ~ N(0, I):
- `PolynomialFeatures`: monomials of y. All of total degree <= 4 (D <= 2), <= 3 (D = 3), <= 2
  (D <= 5), per-coordinate powers <= 4 (D <= 8) or <= 2 (D <= 16), and for larger D the sums
  sum_d y_d^k, k <= 4;
- `KernelFeatures`: Gaussian bumps around anchor draws of x0 (D <= 3).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.data import GaussianMixture
from models.entropy.quadrature import NodeTimes

_Z_MOMENTS = (1.0, 0.0, 1.0, 0.0, 3.0)  # E z^k, k = 0..4, z ~ N(0, 1)


@dataclass(frozen=True)
class Source:
    """Where x0 comes from: `draw(n, generator) -> (x0 (n, ...), labels (n,) | None)`, with the exact
    moments of what `draw` samples: `coord_moments` (5, D) float64, E x_d^k for k = 0..4 (D = the
    flattened event), `mixed_moment(a (F, D) ints) -> (F,)` = E prod_d x_d^a_d (small D), and
    `kernel_mean(anchors (A, D), mu (n,), w (n,)) -> (n, A)` = E exp(-mu^2 ||x - a||^2 / (2 w))."""

    draw: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]
    coord_moments: torch.Tensor
    mixed_moment: Callable[[torch.Tensor], torch.Tensor]
    kernel_mean: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    event_shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def dim(self) -> int:
        return int(self.coord_moments.shape[1])


def pool_source(x0: torch.Tensor, labels: torch.Tensor | None, device: torch.device | str) -> Source:
    """Uniform draws with replacement from a data pool (N, ...); moments are the pool's own."""
    pool = x0.to(device)
    lab = None if labels is None else labels.to(device)
    rows = pool.reshape(pool.shape[0], -1)
    coord = torch.zeros(5, rows.shape[1], dtype=torch.float64, device=pool.device)
    for i in range(0, len(rows), 4096):  # float64 sums without a float64 copy of a big pool
        chunk = rows[i : i + 4096].double()
        coord += torch.stack([(chunk**k).sum(0) for k in range(5)])
    coord /= len(rows)
    flat = rows.double() if rows.shape[1] <= 16 else None  # mixed moments and kernels: small D only

    def draw(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(pool.shape[0], (n,), generator=gen, device=pool.device)
        return pool.index_select(0, idx), None if lab is None else lab.index_select(0, idx)

    def mixed(a: torch.Tensor) -> torch.Tensor:
        assert flat is not None, "mixed moments are for small D"
        return (flat[:, None, :] ** a.to(flat)[None]).prod(2).mean(0)

    def kernel(anchors: torch.Tensor, mu: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        assert flat is not None, "kernel means are for small D"
        sq = ((flat[:, None, :] - anchors.to(flat)[None]) ** 2).sum(2)  # (N, A), exact (no cdist trick)
        rate = (mu.to(flat) ** 2 / (2 * w.to(flat)))[:, None, None]  # (n, 1, 1)
        step = max(1, (1 << 22) // sq.numel())
        return torch.cat([torch.exp(-rate[i : i + step] * sq[None]).mean(1) for i in range(0, len(rate), step)])

    return Source(draw, coord, mixed, kernel, tuple(pool.shape[1:]), pool.dtype)


def _gauss_raw(m: torch.Tensor, h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """E x^k for x ~ N(m, h^2), elementwise, with integer k in 0..4 of the same shape as m."""
    m2, h2 = m * m, h * h
    table = torch.stack([torch.ones_like(m), m, m2 + h2, m * m2 + 3 * m * h2, m2 * m2 + 6 * m2 * h2 + 3 * h2 * h2])
    return table.gather(0, k[None]).squeeze(0)


def mixture_source(mixture: GaussianMixture, device: torch.device | str, dtype: torch.dtype) -> Source:
    """Fresh draws from a Gaussian mixture; exact moments."""
    w, m, h = mixture.weights, mixture.means, mixture.stds

    def draw(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = mixture.sample(n, gen, device=device, dtype=dtype)
        assert isinstance(x, torch.Tensor)
        return x, None

    def mixed(a: torch.Tensor) -> torch.Tensor:
        a = a.long().cpu()[:, None, :].expand(-1, len(w), -1)  # (F, K, D)
        per = _gauss_raw(m.expand_as(a), h.expand_as(a), a)
        return (per.prod(2) @ w).to(device)

    def kernel(anchors: torch.Tensor, mu: torch.Tensor, wid: torch.Tensor) -> torch.Tensor:
        mu2, wid = mu.double().cpu()[:, None, None, None] ** 2, wid.double().cpu()[:, None, None, None]
        tot = wid + mu2 * (h * h)[None, :, None, :]  # (n, K, 1, D)
        diff2 = (m[:, None, :] - anchors.double().cpu()[None]) ** 2  # (K, A, D)
        per = torch.sqrt(wid / tot) * torch.exp(-mu2 * diff2[None] / (2 * tot))
        return (per.prod(3).transpose(1, 2) @ w).to(device)  # (n, A)

    coord = torch.stack([w @ _gauss_raw(m, h, torch.full_like(m, k, dtype=torch.long)) for k in range(5)])
    return Source(draw, coord.to(device), mixed, kernel, (mixture.dim,), dtype)


class PolynomialFeatures:
    """Monomials of y = mu x0 + Sigma z as control variates with exact means (module doc)."""

    def __init__(self, source: Source) -> None:
        d = source.dim
        self.source = source
        self.mode, self.degree = self._choose(d)
        if self.mode == "full":
            exps = [a for k in range(1, self.degree + 1) for a in itertools.combinations_with_replacement(range(d), k)]
            alphas = torch.zeros(len(exps), d, dtype=torch.long)
            for i, a in enumerate(exps):
                for j in a:
                    alphas[i, j] += 1
            self.alphas = alphas
            betas = sorted({b for a in alphas.tolist() for b in itertools.product(*(range(k + 1) for k in a))})
            self.beta_index = {b: i for i, b in enumerate(betas)}
            self.beta_moments = source.mixed_moment(torch.tensor(betas, dtype=torch.long)).double().cpu()
        self.n_features = {"full": len(getattr(self, "alphas", [])), "coord": self.degree * d, "sum": self.degree}[
            self.mode
        ]

    @staticmethod
    def _choose(d: int) -> tuple[str, int]:
        if d <= 2:
            return "full", 4
        if d == 3:
            return "full", 3
        if d <= 5:
            return "full", 2
        if d <= 8:
            return "coord", 4
        if d <= 16:
            return "coord", 2
        return "sum", 4

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """Features (B, F) of flattened y (B, D), float64."""
        if self.mode == "sum":  # large D: no (B, degree, D) stack
            y2 = y * y
            sums = [y.sum(1), y2.sum(1), (y2 * y).sum(1), (y2 * y2).sum(1)]
            return torch.stack(sums[: self.degree], dim=1)
        powers = [torch.ones_like(y)]
        for _ in range(self.degree):
            powers.append(powers[-1] * y)
        if self.mode == "full":
            table = torch.stack(powers, dim=1)  # (B, degree + 1, D)
            a = self.alphas.to(y.device)  # (F, D)
            cols = torch.arange(y.shape[1], device=y.device).expand_as(a)
            return table[:, a, cols].prod(2)
        return torch.stack(powers[1:], dim=1).reshape(len(y), -1)  # coord: (B, degree * D)

    def means(self, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Exact E[features] at nodes with mean scale mu (n,) and std Sigma (n,): (n, F), CPU."""
        mu, std = mu.double().cpu(), std.double().cpu()
        if self.mode == "full":
            cols = []
            for a in self.alphas.tolist():
                total = torch.zeros_like(mu)
                for b in itertools.product(*(range(k + 1) for k in a)):
                    c = math.prod(math.comb(k, j) * _Z_MOMENTS[k - j] for k, j in zip(a, b, strict=True))
                    if c:
                        nb = sum(b)
                        total = total + c * mu**nb * std ** (sum(a) - nb) * self.beta_moments[self.beta_index[b]]
                cols.append(total)
            return torch.stack(cols, dim=1)
        xm = self.source.coord_moments.double().cpu()  # (5, D)
        cols = []
        for k in range(1, self.degree + 1):
            ek = torch.zeros(len(mu), xm.shape[1], dtype=torch.float64)  # E y_d^k at each node, (n, D)
            for j in range(k + 1):
                ek += math.comb(k, j) * _Z_MOMENTS[k - j] * mu[:, None] ** j * std[:, None] ** (k - j) * xm[j][None]
            cols.append(ek if self.mode == "coord" else ek.sum(1, keepdim=True))
        return torch.cat(cols, dim=1)


class KernelFeatures:
    """Gaussian bumps exp(-||y - mu a||^2 / (2 l^2)) around anchors a (draws of x0), l^2 =
    Sigma^2 + mu^2 l0^2, as control variates for small D (none above `max_dim`). Their means are
    exact: (l^2 / (l^2 + Sigma^2))^(D/2) E exp(-mu^2 ||x0 - a||^2 / (2 (l^2 + Sigma^2)))."""

    def __init__(
        self, source: Source, seed: int, device: torch.device | str, n_anchors: int = 24, max_dim: int = 3
    ) -> None:
        d = source.dim
        self.source = source
        self.n_features = n_anchors if d <= max_dim else 0
        if self.n_features:
            gen = torch.Generator(device=device).manual_seed(int(seed) + 7919)
            x, _ = source.draw(n_anchors, gen)
            self.anchors = x.reshape(n_anchors, -1).double()
            h2 = float((source.coord_moments[2] - source.coord_moments[1] ** 2).mean())
            self.l0sq = 4.0 * h2 / n_anchors ** (2.0 / d)

    def __call__(self, y: torch.Tensor, t: NodeTimes) -> torch.Tensor:
        if not self.n_features:
            return y.new_zeros(len(y), 0)
        l2 = (t.std**2 + t.mu**2 * self.l0sq)[:, None]
        sq = ((y[:, None, :] - t.mu[:, None, None] * self.anchors.to(y)[None]) ** 2).sum(2)
        return torch.exp(-sq / (2 * l2))

    def means(self, t: NodeTimes) -> torch.Tensor:
        if not self.n_features:
            return torch.zeros(len(t.s), 0, dtype=torch.float64)
        l2 = t.std**2 + t.mu**2 * self.l0sq
        w = l2 + t.std**2
        pre = (l2 / w) ** (0.5 * self.source.dim)
        return (pre[:, None] * self.source.kernel_mean(self.anchors, t.mu, w)).double().cpu()
