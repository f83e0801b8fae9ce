"""Neural entropy, total entropy, density bound and data entropy (docs/math.md §3), estimated well (§4).

Every quantity is a time integral of an expectation over x0 and z. The estimator
(`models.entropy.montecarlo.stratified_mc` on a `models.entropy.quadrature.time_grid`):
- nodes: composite Gauss-Lobatto in log-SNR, where the integrand Sigma^2/2 E||e||^2 per unit
  log-SNR stays bounded (docs/math.md §4.1); the rate curve, the cumulative curve and the total
  come from the same evaluations. (The paper: 100 uniform times on [1e-5, 1], trapezoid rule,
  one batch of x0 reused at every time.)
- every throw has its own x0 (uniform with replacement from the data pool, or a fresh mixture
  draw) and its own z; antithetic pairs (x0, z), (x0, -z) are an option, off by default because
  with the control variates below independent x0 measured better (bench/bench_estimators.py);
- control variates with exactly known means, fitted per node by cross-fitted least squares: the
  same integrand for the Gaussian fit N(m, diag(h^2)) of the data (exact for Gaussian data),
  ||z||^2, ||x0||^2, Gaussian bumps and monomials of y (low D);
- a pilot spread over the nodes, then Neyman allocation n_i ~ |w_i| sd_i in growing rounds, which
  stop early once `target_rel_stderr` is met;
- standard errors: per-node variances of the out-of-fold residuals, propagated through the
  quadrature weights (nodes are independent). The quadrature error is far below (~1e-6).
Batched under torch.inference_mode; same code on CPU and CUDA (`device`); reproducible for an equal
config and device (one torch.Generator seeded by `config.seed`). Units: nats unless named bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from models.data import GaussianMixture
from models.entropy.closed_forms import check_end, gaussian_terms, total_entropy_gaussian, total_entropy_mixture_exact
from models.entropy.control_variates import KernelFeatures, PolynomialFeatures, Source, mixture_source, pool_source
from models.entropy.montecarlo import MIN_PER_NODE, Integrand, NodeEstimates, stratified_mc
from models.entropy.quadrature import GRID_VARIABLES, NodeTimes, TimeGrid, time_grid
from models.processes import ForwardProcess
from models.tensors import append_dims, squared_norm

__all__ = [
    "DensityBound", "EThetaFn", "EntropyCurve", "EntropyResult", "Estimate", "MeasurementConfig", "ScoreFn",
    "LN2", "data_entropy", "density_bound", "neural_entropy", "total_entropy_gaussian", "total_entropy_mixture",
    "total_entropy_mixture_exact",
]

EThetaFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
ScoreFn = EThetaFn  # score_fn(y, s, labels) -> grad log p_s(y), same shape as y
LN2 = math.log(2.0)  # nats per bit: bits = nats / LN2 (the one definition; import it from here)
MAX_BATCH_ELEMENTS = 1 << 23  # batch * D cap: the float64 control-variate work stays ~64 MB a tensor


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error (same units)."""

    mean: float
    stderr: float

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.mean * factor, self.stderr * abs(factor))

    @property
    def relative_stderr(self) -> float:
        return self.stderr / abs(self.mean) if self.mean else math.inf

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "stderr": self.stderr}


@dataclass(frozen=True)
class MeasurementConfig:
    """How to measure; see the module doc. Defaults carry their meaning."""

    n_times: int = 64  # curve points at least (grid: n_panels * (panel_order - 1) + 1 >= n_times)
    n_samples: int = 65536  # budget: network evaluations in all (throws of (s, x0, z))
    seed: int = 0  # seeds the one torch.Generator of the measurement
    t_min: float | None = None  # start of the integral (default: the process's t_min)
    t_max: float | None = None  # T, end of the integral (default: the process's t_max)
    batch_size: int = 8192  # evaluations per network call
    grid: str = "log_snr"  # node variable: log_snr | sqrt_s | log_s | linear
    panel_order: int = 5  # Gauss-Lobatto points per panel
    antithetic: bool = False  # throws in pairs (x0, z), (x0, -z); off: fresh x0 measured better
    control_variates: bool = True  # Gaussian-fit, ||z||^2, ||x0||^2 control variates
    pilot_fraction: float = 0.25  # share of the budget spread evenly before Neyman allocation
    target_rel_stderr: float | None = None  # stop early once stderr <= this * |total|

    def __post_init__(self) -> None:
        if self.n_times < 2 or self.n_samples < 1 or self.batch_size < 2:
            raise ValueError("n_times >= 2, n_samples >= 1 and batch_size >= 2 are required")
        if self.panel_order < 2:
            raise ValueError(f"panel_order must be >= 2, got {self.panel_order}")
        if self.n_times < self.panel_order:
            raise ValueError(f"n_times must be >= panel_order = {self.panel_order}, got {self.n_times}")
        if self.n_samples < self.min_evaluations:
            raise ValueError(
                f"n_samples = {self.n_samples} is too small for {self.n_grid_points} time points: "
                f"need at least {self.min_evaluations} network evaluations"
            )
        if self.grid not in GRID_VARIABLES:
            raise ValueError(f"grid must be one of {GRID_VARIABLES}, got {self.grid!r}")
        if not 0.0 < self.pilot_fraction <= 1.0:
            raise ValueError(f"pilot_fraction must lie in (0, 1], got {self.pilot_fraction}")
        if self.target_rel_stderr is not None and not self.target_rel_stderr > 0:
            raise ValueError(f"target_rel_stderr must be > 0, got {self.target_rel_stderr}")

    @property
    def n_grid_points(self) -> int:
        """Nodes of the time grid: n_panels * (panel_order - 1) + 1, the least that is >= n_times."""
        n_panels = max(1, math.ceil((self.n_times - 1) / (self.panel_order - 1)))
        return n_panels * (self.panel_order - 1) + 1

    @property
    def min_evaluations(self) -> int:
        """The smallest budget n_samples that gives every grid node its pilot throws."""
        return MIN_PER_NODE * self.n_grid_points * (2 if self.antithetic else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasurementConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown measurement settings: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class EntropyCurve:
    """Columns over the grid, float64 (n,): s, rate dS/ds (nats per unit s), cumulative S(s)."""

    s: np.ndarray
    rate: np.ndarray
    rate_stderr: np.ndarray
    cumulative: np.ndarray
    cumulative_stderr: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}


@dataclass(frozen=True)
class EntropyResult:
    """A time integral S(T) = int_{t_start}^{t_end} rate ds (nats) with its curve."""

    total: Estimate
    curve: EntropyCurve
    dim: int
    n_evaluations: int
    seed: int
    t_start: float
    t_end: float
    grid: str

    def bits(self) -> Estimate:
        return self.total.scaled(1.0 / LN2)

    def bits_per_dim(self) -> Estimate:
        return self.total.scaled(1.0 / (LN2 * self.dim))

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_nats": self.total.to_dict(),
            "total_bits": self.bits().to_dict(),
            "bits_per_dim": self.bits_per_dim().to_dict(),
            "curve": self.curve.to_dict(),
            **{k: getattr(self, k) for k in ("dim", "n_evaluations", "seed", "t_start", "t_end", "grid")},
        }


@dataclass(frozen=True)
class DensityBound:
    """Upper bound on the average -log p(x) (docs/math.md §3.5): nats per sample, bits per dimension."""

    nats: Estimate
    bits_per_dim: Estimate
    prior_nats: float  # the exact E[-log pi(y_T)] part of `nats`
    offset_bits_per_dim: float  # 8-bit offset included in bits_per_dim (0 if none)
    n_evaluations: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "nats": self.nats.to_dict(),
            "bits_per_dim": self.bits_per_dim.to_dict(),
            "prior_nats": self.prior_nats,
            "offset_bits_per_dim": self.offset_bits_per_dim,
            "n_evaluations": self.n_evaluations,
        }


# ---- where x0 comes from ----
def _check_pool(x0: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    x0 = torch.as_tensor(x0)
    if x0.ndim < 2:
        raise ValueError(f"data must have shape (N, D) or (N, C, H, W), got {tuple(x0.shape)}")
    if x0.shape[0] == 0 or x0[0].numel() == 0:
        raise ValueError("data is empty: need at least one sample to measure on")
    if not x0.is_floating_point():
        x0 = x0.float()
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("data contains NaN or Inf values")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (x0.shape[0],):
            raise ValueError(f"labels must have shape ({x0.shape[0]},), got {tuple(labels.shape)}")
    return x0, labels


# ---- the integrands ----
class _GaussianFit(Integrand):
    """Shared part: y = mu x0 + Sigma z, the network call, and the control variates: the same
    integrand for the Gaussian fit N(m, diag(h^2)) of the source, ||z||^2, ||x0||^2, kernel bumps
    and monomials of y (in this order of priority), all with exact means."""

    def __init__(self, fn: EThetaFn, source: Source, seed: int, device: torch.device | str) -> None:
        self.fn, self.source = fn, source
        self.kernel = KernelFeatures(source, seed, device)
        self.m, self.second = source.coord_moments[1], source.coord_moments[2]
        self.h2 = (self.second - self.m**2).clamp_min(0.0)
        self.poly = PolynomialFeatures(source)

    def _evaluate(
        self, x0: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor, t: NodeTimes
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(network output, v (B, D), y - mu m (B, D), z (B, D)), the last three float64."""
        nd = x0.ndim
        y = append_dims(t.mu.to(x0.dtype), nd) * x0 + append_dims(t.std.to(x0.dtype), nd) * z
        out = self.fn(y, t.s.to(x0.dtype), labels)
        if out.shape != y.shape:
            raise ValueError(f"network output has shape {tuple(out.shape)}, expected {tuple(y.shape)}")
        xf, zf = x0.reshape(len(x0), -1).double(), z.reshape(len(z), -1).double()
        mu, std = t.mu[:, None], t.std[:, None]
        v = mu**2 * self.h2 + std**2
        return out, v, mu * (xf - self.m) + std * zf, zf

    def _features(
        self, phi: torch.Tensor, x0: torch.Tensor, zf: torch.Tensor, dev: torch.Tensor, t: NodeTimes
    ) -> torch.Tensor:
        y64 = t.mu[:, None] * self.m + dev
        xsq = (x0.reshape(len(x0), -1).double() ** 2).sum(1)
        return torch.cat(
            [phi[:, None], (zf * zf).sum(1, keepdim=True), xsq[:, None], self.kernel(y64, t), self.poly(y64)], dim=1
        )

    def _feature_means(self, phi: torch.Tensor, t: NodeTimes) -> torch.Tensor:
        n, d = len(t.s), float(self.m.numel())
        return torch.cat(
            [
                phi[:, None].cpu(),
                torch.full((n, 1), d, dtype=torch.float64),
                torch.full((n, 1), float(self.second.sum()), dtype=torch.float64),
                self.kernel.means(t),
                self.poly.means(t.mu, t.std),
            ],
            dim=1,
        )


class _RateIntegrand(_GaussianFit):
    """sigma^2/2 ||e_theta(y, s)||^2 (docs/math.md §3.1); Gaussian fit (§4.3): e_G = p y - (y - mu m)/v."""

    def __call__(self, x0, labels, z, t):  # type: ignore[no-untyped-def]
        e, v, dev, zf = self._evaluate(x0, labels, z, t)
        value = 0.5 * t.sigma2 * squared_norm(e).double()
        e_g = t.eq_precision[:, None] * (t.mu[:, None] * self.m + dev) - dev / v
        phi = 0.5 * t.sigma2 * (e_g * e_g).sum(1)
        return value, self._features(phi, x0, zf, dev, t)

    def feature_means(self, t: NodeTimes) -> torch.Tensor:
        mu, std, p = t.mu[:, None], t.std[:, None], t.eq_precision[:, None]
        v = mu**2 * self.h2 + std**2
        alpha, beta = p - 1.0 / v, mu * self.m / v
        ey, ey2 = mu * self.m, mu**2 * self.second + std**2
        phi = 0.5 * t.sigma2 * (alpha**2 * ey2 + 2 * alpha * beta * ey + beta**2).sum(1)
        return self._feature_means(phi, t)


class _BoundIntegrand(_GaussianFit):
    """1/2 [sigma^2 ||s_theta||^2 + 2 sigma^2/Sigma <s_theta, z> + 2 a D]: the integrand of
    docs/math.md §3.5, sigma^2 ||s_theta - grad log p(y|x)||^2 - sigma^2 ||grad log p(y|x)||^2 + 2 a D,
    halved and expanded (grad log p(y|x) = -z / Sigma) so that nothing cancels."""

    def __call__(self, x0, labels, z, t):  # type: ignore[no-untyped-def]
        score, v, dev, zf = self._evaluate(x0, labels, z, t)
        d = float(zf.shape[1])
        dot = (score.reshape(len(score), -1) * z.reshape(len(z), -1)).sum(1).double()
        value = 0.5 * (t.sigma2 * squared_norm(score).double() + 2 * t.sigma2 / t.std * dot + 2 * t.drift * d)
        s_g = -dev / v
        phi = 0.5 * (t.sigma2 * (s_g * s_g).sum(1) + 2 * t.sigma2 / t.std * (s_g * zf).sum(1) + 2 * t.drift * d)
        return value, self._features(phi, x0, zf, dev, t)

    def feature_means(self, t: NodeTimes) -> torch.Tensor:
        mu, std = t.mu[:, None], t.std[:, None]
        v = mu**2 * self.h2 + std**2
        e_sq = ((mu**2 * self.h2 + std**2) / v**2).sum(1)  # E (y - mu m)^2 / v^2
        e_dot = -(std / v).sum(1)  # E (s_G z)
        d = float(self.m.numel())
        phi = 0.5 * (t.sigma2 * e_sq + 2 * t.sigma2 / t.std * e_dot + 2 * t.drift * d)
        return self._feature_means(phi, t)


def _measure(
    integrand: Integrand, source: Source, process: ForwardProcess, config: MeasurementConfig, device: torch.device | str
) -> tuple[TimeGrid, NodeEstimates]:
    grid = time_grid(
        process,
        config.n_times,
        t_start=config.t_min,
        t_end=config.t_max,
        variable=config.grid,
        panel_order=config.panel_order,
    )
    batch = min(config.batch_size, max(64, MAX_BATCH_ELEMENTS // source.dim))
    with torch.inference_mode():
        est = stratified_mc(
            integrand,
            source,
            process,
            grid,
            n_evaluations=config.n_samples,
            seed=config.seed,
            batch_size=batch,
            antithetic=config.antithetic,
            control_variates=config.control_variates,
            pilot_fraction=config.pilot_fraction,
            target_rel_stderr=config.target_rel_stderr,
            device=device,
        )
    return grid, est


def _result(grid: TimeGrid, est: NodeEstimates, dim: int, config: MeasurementConfig) -> EntropyResult:
    c = grid.cumulative_weights
    curve = EntropyCurve(grid.s.copy(), est.mean, np.sqrt(est.var), c @ est.mean, np.sqrt((c * c) @ est.var))
    total = Estimate(grid.integrate(est.mean), math.sqrt(float(grid.weights**2 @ est.var)))
    return EntropyResult(total, curve, dim, est.n_evaluations, config.seed, grid.t_start, grid.t_end, grid.variable)


# ---- public estimators ----
def neural_entropy(
    e_theta: EThetaFn,
    process: ForwardProcess,
    x0: torch.Tensor,
    config: MeasurementConfig | None = None,
    *,
    labels: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> EntropyResult:
    """S_NN(T) = int sigma^2/2 E||e_theta(y_s, s)||^2 ds (docs/math.md §3.1) over x0 drawn from the pool
    `x0` (N, ...) (held-out data), with its rate and cumulative curves; nats."""
    config = config or MeasurementConfig()
    x0, labels = _check_pool(x0, labels)
    source = pool_source(x0, labels, device)
    grid, est = _measure(_RateIntegrand(e_theta, source, config.seed, device), source, process, config, device)
    return _result(grid, est, int(x0[0].numel()), config)


def total_entropy_mixture(
    mixture: GaussianMixture,
    process: ForwardProcess,
    config: MeasurementConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> EntropyResult:
    """S_tot(T) with the exact mixture score, e = grad log p_s - grad log p_eq, over fresh mixture
    draws; the same grid and estimator as `neural_entropy`, so the curves overlay."""
    config = config or MeasurementConfig()

    def e_exact(y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return mixture.score(y, s, process) - process.equilibrium_score(y, s)

    source = mixture_source(mixture, device, dtype)
    grid, est = _measure(_RateIntegrand(e_exact, source, config.seed, device), source, process, config, device)
    return _result(grid, est, mixture.dim, config)


def density_bound(
    score_fn: ScoreFn,
    process: ForwardProcess,
    x: torch.Tensor,
    config: MeasurementConfig | None = None,
    *,
    labels: torch.Tensor | None = None,
    data_variance: float | None = None,
    value_range: tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
) -> DensityBound:
    """Average over x (N, ...) of the bound on -log p_theta(x) (docs/math.md §3.5), integral over
    [t_min, T]; pi = process prior at T (`data_variance` as in `ForwardProcess.prior_variance`).
    bits/dim = nats / (D ln 2) + log2(256 / (hi - lo)) when `value_range` (8-bit data) is given."""
    config = config or MeasurementConfig()
    x, labels = _check_pool(x, labels)
    source = pool_source(x, labels, device)
    grid, est = _measure(_BoundIntegrand(score_fn, source, config.seed, device), source, process, config, device)
    d = int(x[0].numel())
    t_end = torch.tensor([grid.t_end], dtype=torch.float64)
    mu2, var_t = float(process.mean_scale(t_end) ** 2), float(process.variance(t_end))
    v_pi = process.prior_variance(grid.t_end, data_variance)
    prior = 0.5 * d * math.log(2 * math.pi * v_pi) + (mu2 * float(source.coord_moments[2].sum()) + d * var_t) / (
        2 * v_pi
    )
    integral = Estimate(grid.integrate(est.mean), math.sqrt(float(grid.weights**2 @ est.var)))
    nats = Estimate(prior + integral.mean, integral.stderr)
    offset = 0.0
    if value_range is not None:
        offset = math.log2(256.0 / (float(value_range[1]) - float(value_range[0])))
    bpd = nats.scaled(1.0 / (d * LN2))
    return DensityBound(nats, Estimate(bpd.mean + offset, bpd.stderr), prior, offset, est.n_evaluations)


# ---- data entropy ----
def data_entropy(
    neural: EntropyResult | Estimate, process: ForwardProcess, x0: torch.Tensor, *, t: float | None = None
) -> Estimate:
    """h(p_data) ~ E[-log p_eq(x)] - S_NN(T) - KL(p_T || p_eq) (docs/math.md §3.6), nats, with the last
    term from a Gaussian fit of p_T (for VE: h(p_T) of the fit, the flat p_eq contributing 0)."""
    total = neural.total if isinstance(neural, EntropyResult) else neural
    if isinstance(neural, EntropyResult):
        t = neural.t_end if t is None else t
    t = check_end(process, t, 0.0)
    x0, _ = _check_pool(x0, None)
    flat = x0.reshape(len(x0), -1).double()
    ce_pts = -process.equilibrium_log_prob(flat, torch.full((len(flat),), t, dtype=torch.float64))
    ce_se = float(ce_pts.std()) / math.sqrt(len(flat)) if len(flat) > 1 else 0.0
    h_t, ce_t = gaussian_terms(process, t, flat.mean(0), (flat * flat).mean(0))
    mean = float(ce_pts.mean()) - total.mean + (h_t - ce_t)
    return Estimate(mean, math.sqrt(total.stderr**2 + ce_se**2))
