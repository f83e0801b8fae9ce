"""Stratified Monte Carlo over a time grid (docs/math.md §4): the engine behind `models.entropy.estimators`.

At every node s_i of a `TimeGrid` the engine estimates E[f(x0, z, s_i)] from its own fresh throws
(x0 from a `Source`, z ~ N(0, I), optionally in antithetic pairs). Per node, control variates
with exactly known means (`models.entropy.control_variates` and the integrand's own) are fitted by
cross-fitted least squares (unbiased, honest variance); a pilot is spread over the nodes (half
evenly, half by the integrand's Gaussian-fit guess) and the rest allocated by Neyman's rule
n_i ~ |w_i| sd_i in growing rounds. Nodes are independent, so the variance of any weighted sum
of node means is sum_i c_i^2 var_i. A node uses as many features as its throws support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from models.entropy.control_variates import Source
from models.entropy.quadrature import NodeTimes, TimeGrid
from models.processes import ForwardProcess

# Tuning, chosen by measurement (bench/bench_estimators.py):
MIN_PER_NODE = 16  # pilot throws per node (pairs when antithetic), at least
PILOT_GUIDED = 0.5  # share of the pilot spread by the Gaussian-fit guess of each node's weight
TARGET_PILOT = 2  # with a target stderr, the pilot is this many times the per-node minimum
ROUND_GROWTH = 3.0  # a round grows the throws at most this many times, for better allocations
FEATURE_RATIO = 16.0  # training throws per control-variate feature, at least
MIN_FEATURES = 3  # features every node with enough throws uses
RIDGE = 1e-6  # ridge on the standardized normal equations, relative to their mean diagonal


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
