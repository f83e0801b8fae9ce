"""Stratified Monte Carlo over a time grid (MATH.md 4): the engine behind `models.estimators`.

At every node s_i of a `TimeGrid` the engine estimates E[f(x0, z, s_i)] from its own fresh throws
(x0 from a `Source`, z ~ N(0, I), optionally in antithetic pairs). Per node, control variates
with exactly known means are fitted by cross-fitted least squares (unbiased, honest variance);
a pilot is spread over the nodes (half evenly, half by the integrand's Gaussian-fit guess) and the
rest allocated by Neyman's rule n_i ~ |w_i| sd_i in rounds. Nodes are independent, so the
variance of any weighted sum of node means is sum_i c_i^2 var_i.

Generic control variates (an integrand adds its own in front): Gaussian bumps around anchor draws
(D <= 3) and monomials of y = mu x0 + Sigma z. E[y^a] is exact from the source's moments of x0
(pool averages, or a mixture's closed form) and the Gaussian moments of z. Which monomials
depends on D: all of total degree <= 4 (D <= 2), <= 3 (D = 3), <= 2 (D <= 5), per-coordinate
powers <= 4 (D <= 8) or <= 2 (D <= 16), and for larger D the sums sum_d y_d^k, k <= 4. A node uses
as many features as its throw count supports (FEATURE_RATIO).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from models.data import GaussianMixture
from models.processes import ForwardProcess
from models.quadrature import TimeGrid

_Z_MOMENTS = (1.0, 0.0, 1.0, 0.0, 3.0)  # E z^k, k = 0..4, z ~ N(0, 1)

# Tuning, chosen by measurement (bench/bench_estimators.py):
MIN_PER_NODE = 16  # pilot throws (pairs) per node, at least
PILOT_GUIDED = 0.5  # share of the pilot spread by the Gaussian-fit guess of each node's weight
TARGET_PILOT = 2  # with a target stderr, the pilot is this many times the per-node minimum
ROUND_GROWTH = 3.0  # a round grows the throws at most this many times, for better allocations
FEATURE_RATIO = 16.0  # training throws per control-variate feature, at least
MIN_FEATURES = 3  # features every node with enough throws uses
RIDGE = 1e-6  # ridge on the standardized normal equations, relative to their mean diagonal


@dataclass(frozen=True)
class NodeTimes:
    """Process coefficients at times s, float64 tensors of shape (B,) on the measuring device."""

    s: torch.Tensor
    mu: torch.Tensor  # mean scale mu(s)
    std: torch.Tensor  # Sigma(s)
    sigma2: torch.Tensor  # diffusion sigma(s)^2
    drift: torch.Tensor  # a(s)
    eq_precision: torch.Tensor  # 2 a / sigma^2; the equilibrium score is -eq_precision * y

    @classmethod
    def at(cls, process: ForwardProcess, s: np.ndarray, device: torch.device | str) -> NodeTimes:
        st = torch.as_tensor(s, dtype=torch.float64)
        process.check_times(st)
        values = (
            st,
            process.mean_scale(st),
            process.std(st),
            process.diffusion_squared(st),
            process.drift_rate(st),
            process.equilibrium_precision(st),
        )
        return cls(*(v.to(device) for v in values))

    def take(self, idx: torch.Tensor) -> NodeTimes:
        return NodeTimes(*(getattr(self, k).index_select(0, idx) for k in self.__dataclass_fields__))

    def twice(self) -> NodeTimes:
        return NodeTimes(*(torch.cat([getattr(self, k)] * 2) for k in self.__dataclass_fields__))


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
    flat = pool.reshape(pool.shape[0], -1).double()

    def draw(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(pool.shape[0], (n,), generator=gen, device=pool.device)
        return pool.index_select(0, idx), None if lab is None else lab.index_select(0, idx)

    def mixed(a: torch.Tensor) -> torch.Tensor:
        return (flat[:, None, :] ** a.to(flat)[None]).prod(2).mean(0)

    def kernel(anchors: torch.Tensor, mu: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        sq = torch.cdist(flat, anchors.to(flat)) ** 2  # (N, A)
        return torch.stack(
            [torch.exp(-(m_ * m_) * sq / (2 * w_)).mean(0) for m_, w_ in zip(mu.tolist(), w.tolist(), strict=True)]
        )

    coord = torch.stack([(flat**k).mean(0) for k in range(5)])
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
        powers = [torch.ones_like(y)]
        for _ in range(self.degree):
            powers.append(powers[-1] * y)
        if self.mode == "full":
            table = torch.stack(powers, dim=1)  # (B, degree + 1, D)
            a = self.alphas.to(y.device)  # (F, D)
            cols = torch.arange(y.shape[1], device=y.device).expand_as(a)
            return table[:, a, cols].prod(2)
        stacked = torch.stack(powers[1:], dim=1)  # (B, degree, D)
        return stacked.reshape(len(y), -1) if self.mode == "coord" else stacked.sum(2)

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
            ek = sum(
                math.comb(k, j) * _Z_MOMENTS[k - j] * mu[:, None] ** j * std[:, None] ** (k - j) * xm[j][None]
                for j in range(k + 1)
            )  # (n, D)
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


class Integrand:
    """A per-throw quantity whose time integral is wanted; subclasses define both methods."""

    def __call__(
        self, x0: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor, t: NodeTimes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(value (B,) float64 per unit s, control-variate features (B, p) float64)."""
        raise NotImplementedError

    def feature_means(self, t: NodeTimes) -> torch.Tensor:
        """Exact expectations (n_nodes, p) of the features at each node (CPU)."""
        raise NotImplementedError


@dataclass(frozen=True)
class NodeEstimates:
    """Per-node means (n,), variances of those means (n,), throw counts (n,), evaluations used."""

    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray
    n_evaluations: int


def _standardized(v: np.ndarray) -> np.ndarray:
    """v / sd per column; constant columns become zero."""
    sd = v.std(axis=0)
    return v / np.where(sd > 1e-12 * (np.abs(v).max(axis=0) + 1e-300), sd, np.inf)


def _cross_fit(f: np.ndarray, x: np.ndarray, folds: int) -> np.ndarray:
    """Out-of-fold residuals f_j - beta_(-q) . x_j, x with mean zero in expectation, beta_(-q)
    the least-squares slope fitted without j's fold q: each residual has mean E[f] exactly."""
    xs, n = _standardized(x), len(f)
    resid = f.copy()
    fold = np.arange(n) % folds
    for q in range(folds):
        tr = fold != q
        xt, ft = xs[tr] - xs[tr].mean(axis=0), f[tr] - f[tr].mean()
        gram = xt.T @ xt
        gram[np.diag_indices_from(gram)] += RIDGE * np.trace(gram) / len(gram) + 1e-300
        resid[~tr] = f[~tr] - xs[~tr] @ np.linalg.solve(gram, xt.T @ ft)
    return resid


def node_stats(
    node: np.ndarray, f: np.ndarray, feats: np.ndarray, fmeans: np.ndarray, n_nodes: int, use_cv: bool, folds: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control-variate estimate of each node's mean and the variance of that estimate.

    Cross-fitted regression (`_cross_fit`): the coefficients applied to a throw never saw it, so
    the estimate is unbiased and the spread of the out-of-fold residuals is an honest variance.
    A node uses its first k features, k = max(MIN_FEATURES, training throws / FEATURE_RATIO - 1)."""
    mean, var = np.zeros(n_nodes), np.zeros(n_nodes)
    count = np.bincount(node, minlength=n_nodes)
    bounds = np.concatenate([[0], np.cumsum(count)])
    order = np.argsort(node, kind="stable")
    f, feats = f[order], feats[order]
    with threadpool_limits(1, user_api="blas"):  # tiny products: threads would only contend
        for i in range(n_nodes):
            fi, n = f[bounds[i] : bounds[i + 1]], int(count[i])
            n_train = n * (folds - 1) // folds
            k = min(feats.shape[1], max(MIN_FEATURES, int(n_train / FEATURE_RATIO) - 1))
            k = k if n_train >= 3 * MIN_FEATURES else 0
            if use_cv and k > 0:
                fi = _cross_fit(fi, feats[bounds[i] : bounds[i + 1], :k] - fmeans[i, :k], folds)
            mean[i] = float(fi.mean())
            var[i] = float(((fi - mean[i]) ** 2).sum()) / max(n - 1, 1) / n
    return mean, _neighbour_floor(mean, var, count), count


def _neighbour_floor(mean: np.ndarray, var: np.ndarray, count: np.ndarray, half: int = 2) -> np.ndarray:
    """Variances no smaller than the median relative spread of the 2 * half + 1 nodes around.

    A few throws of a skewed integrand often miss its tail, so a node's own variance estimate runs
    low; the relative spread sd / |mean| changes slowly from node to node, so its local median is a
    floor that keeps the curve's error bars (and, slightly conservatively, the total's) honest."""
    unit_sd = np.sqrt(var * count)
    rel = unit_sd / np.maximum(np.abs(mean), 1e-300)
    floor = np.array([np.median(rel[max(0, i - half) : i + half + 1]) for i in range(len(rel))])
    return np.maximum(var, (floor * np.abs(mean)) ** 2 / np.maximum(count, 1))


def stratified_mc(
    integrand: Integrand,
    source: Source,
    process: ForwardProcess,
    grid: TimeGrid,
    *,
    n_evaluations: int,
    seed: int = 0,
    batch_size: int = 8192,
    antithetic: bool = False,
    control_variates: bool = True,
    pilot_fraction: float = 0.25,
    target_rel_stderr: float | None = None,
    min_per_node: int | None = None,
    max_rounds: int = 6,
    device: torch.device | str = "cpu",
) -> NodeEstimates:
    """Estimate E[integrand] at every grid node with fresh throws: pilot, then Neyman rounds."""
    n_nodes, per_unit = len(grid), (2 if antithetic else 1)
    min_per_node = MIN_PER_NODE if min_per_node is None else min_per_node
    n_units = n_evaluations // per_unit
    if min_per_node * n_nodes > n_units:
        raise ValueError(
            f"n_samples = {n_evaluations} is too small for {n_nodes} time points: need at least "
            f"{min_per_node * n_nodes * per_unit} network evaluations"
        )
    pilot = max(min_per_node * n_nodes, int(pilot_fraction * n_units))
    if target_rel_stderr:  # the need is unknown: start small, grow by rounds
        pilot = min(pilot, TARGET_PILOT * min_per_node * n_nodes)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    times = NodeTimes.at(process, grid.s, device)
    fmeans = integrand.feature_means(times).numpy()
    w = np.abs(grid.weights)
    nodes: list[np.ndarray] = []
    values: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    counts, used = _pilot_counts(pilot, w * np.abs(fmeans[:, 0]), min_per_node), 0
    units_per_batch = max(1, batch_size // per_unit)
    for _ in range(max_rounds):
        node_idx = np.repeat(np.arange(n_nodes), counts)
        for lo in range(0, len(node_idx), units_per_batch):
            chunk = node_idx[lo : lo + units_per_batch]
            x0, labels = source.draw(len(chunk), gen)
            z = torch.randn(x0.shape, generator=gen, device=device, dtype=x0.dtype)
            t = times.take(torch.from_numpy(chunk).to(device))
            if antithetic:
                x0, z, t = torch.cat([x0, x0]), torch.cat([z, -z]), t.twice()
                labels = None if labels is None else torch.cat([labels, labels])
            f, feat = integrand(x0, labels, z, t)
            if not bool(torch.isfinite(f).all()):
                bad = t.s[~torch.isfinite(f)]
                raise ValueError(
                    f"the integrand is NaN or infinite at s in [{float(bad.min()):g}, "
                    f"{float(bad.max()):g}] (does the network output NaN/Inf?)"
                )
            if antithetic:
                half = len(chunk)
                f, feat = 0.5 * (f[:half] + f[half:]), 0.5 * (feat[:half] + feat[half:])
            nodes.append(chunk)
            values.append(f.cpu().numpy())
            feats.append(feat.cpu().numpy())
        used += int(counts.sum())
        mean, var, count = node_stats(
            np.concatenate(nodes), np.concatenate(values), np.concatenate(feats), fmeans, n_nodes, control_variates
        )
        total, total_se = float(w @ mean), math.sqrt(float(w**2 @ var))
        remaining = n_units - used
        if remaining < n_nodes or (target_rel_stderr and total_se <= target_rel_stderr * abs(total)):
            break
        counts = _allocate(w, np.sqrt(var * count), count, used, remaining, total, target_rel_stderr)
        if counts.sum() == 0:
            break
    return NodeEstimates(mean, var, count, used * per_unit)


def _pilot_counts(total: int, guess: np.ndarray, floor: int) -> np.ndarray:
    """Pilot throws per node: at least `floor`, the rest half evenly and half in proportion to
    |w_i| E[phi_i] (the Gaussian-fit integrand's exact mean, a guess of where the integral is)."""
    n = len(guess)
    spare = max(total - floor * n, 0)
    share = (1 - PILOT_GUIDED) / n + (PILOT_GUIDED * guess / guess.sum() if guess.sum() > 0 else PILOT_GUIDED / n)
    return floor + np.floor(spare * share).astype(np.int64)


def _allocate(
    w: np.ndarray, sd: np.ndarray, count: np.ndarray, used: int, remaining: int, total: float, target: float | None
) -> np.ndarray:
    """Extra throws per node toward Neyman's n_i ~ w_i sd_i, for the whole remaining budget or,
    with a target relative stderr, for about what the target needs (with a 20 % margin)."""
    spread = float(w @ sd)
    goal = min(used + remaining, int(ROUND_GROWTH * used))
    if used + remaining - goal < 0.25 * used:  # not worth another round
        goal = used + remaining
    if target and spread > 0 and total != 0:
        needed = 1.2 * (spread / (target * abs(total))) ** 2
        goal = int(min(goal, max(needed, 1.25 * used)))
    share = w * sd if spread > 0 else w
    extra = np.maximum(goal * share / share.sum() - count, 0.0)
    if extra.sum() > goal - used:
        extra *= (goal - used) / extra.sum()
    return np.floor(extra).astype(np.int64)
