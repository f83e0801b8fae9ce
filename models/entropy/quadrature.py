"""Time grids for the entropy integrals (docs/math.md §4.1), and a grid rule for low-dimensional entropies.

A `TimeGrid` holds nodes s_i in [t_start, t_end], weights w_i (in units of s) with
int_{t_start}^{t_end} r(s) ds ~ sum_i w_i r(s_i), and a cumulative matrix C with
int_{t_start}^{s_k} r(s) ds ~ sum_i C[k, i] r(s_i), so the rate curve, the cumulative curve and the
total all come from the same evaluations.

The default grid is composite Gauss-Lobatto in v = -log-SNR, v(s) = -ln(mu(s)^2 / Sigma(s)^2).
Since dv/ds = sigma(s)^2 / Sigma(s)^2 for every affine-drift process, the entropy rate becomes
    dS/ds ds = sigma^2/2 E||e||^2 ds = Sigma^2/2 E||e||^2 dv,
an integrand that stays bounded at both ends (for data on a finite set it tends to D/2 as s -> 0,
where it is ~D/(2s) per unit s): the nodes crowd near s = 0 exactly as the rate needs.
Panels are equally wide in v with `panel_order` Lobatto points each (exact for polynomials of
degree 2 * panel_order - 3 per panel); consecutive panels share their end points, so the grid has
n_panels * (panel_order - 1) + 1 points and includes t_start and t_end. Other variables:
"sqrt_s" (v = sqrt(s)), "log_s" (v = ln s), "linear" (v = s); `trapezoid_grid` is the paper's
uniform grid with the trapezoid rule, kept for comparison. `NodeTimes` holds the process's
coefficients at the nodes for the Monte Carlo engine (`models.entropy.montecarlo`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.polynomial import legendre as leg

from models.processes import ForwardProcess

GridVariable = Literal["log_snr", "sqrt_s", "log_s", "linear"]
GRID_VARIABLES: tuple[str, ...] = ("log_snr", "sqrt_s", "log_s", "linear")


@dataclass(frozen=True)
class TimeGrid:
    """Nodes s (n,), weights (n,) in units of s, cumulative weights (n, n); see the module doc."""

    s: np.ndarray
    weights: np.ndarray
    cumulative_weights: np.ndarray
    t_start: float
    t_end: float
    variable: str

    def __len__(self) -> int:
        return int(self.s.shape[0])

    def integrate(self, values: np.ndarray) -> float:
        return float(self.weights @ values)


def lobatto_panel(order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Lobatto nodes xi (order,) on [0, 1], weights (order,), and L[k, j] = int_0^xi_k l_j.

    l_j is the Lagrange polynomial of node j, so L[-1] equals the weights.
    """
    if order < 2:
        raise ValueError(f"panel order must be >= 2, got {order}")
    interior = leg.legroots(leg.legder([0] * (order - 1) + [1])) if order > 2 else np.array([])
    x = np.concatenate([[-1.0], np.sort(np.real(interior)), [1.0]])
    vander = leg.legvander(x, order - 1)  # (order, order): P_n(x_i)
    coeffs = np.linalg.solve(vander, np.eye(order))  # column j: Legendre coefficients of l_j
    cum = np.empty((order, order))
    for j in range(order):
        antider = leg.legint(coeffs[:, j], lbnd=-1.0)
        cum[:, j] = leg.legval(x, antider) / 2.0  # d(xi) = dx / 2
    cum[0] = 0.0
    return (x + 1.0) / 2.0, cum[-1].copy(), cum


def s_at_log_snr(process: ForwardProcess, lam: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Invert the decreasing log-SNR: s in [lo, hi] with log_snr(s) = lam (bisection, float64)."""
    target = torch.as_tensor(lam, dtype=torch.float64)
    a = torch.full_like(target, lo)
    b = torch.full_like(target, hi)
    for _ in range(200):
        mid = 0.5 * (a + b)
        above = process.log_snr(mid) > target  # still left of the solution
        a, b = torch.where(above, mid, a), torch.where(above, b, mid)
        if float((b - a).max()) <= 4e-16 * max(hi, 1e-300):
            break
    return (0.5 * (a + b)).clamp(lo, hi).numpy()


def _variable_maps(
    process: ForwardProcess, variable: str, lo: float, hi: float
) -> tuple[float, float, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(v(lo), v(hi), s(v), ds/dv(s)) for the grid variable v, increasing in s."""

    def tensor(s: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(s, dtype=torch.float64)

    if variable == "log_snr":

        def neg_lam(s: float) -> float:
            return -float(process.log_snr(tensor(np.array([s])))[0])

        def jac(s: np.ndarray) -> np.ndarray:
            return (process.variance(tensor(s)) / process.diffusion_squared(tensor(s))).numpy()

        return (
            neg_lam(lo),
            neg_lam(hi),
            lambda v: s_at_log_snr(process, -v, lo, hi),
            jac,
        )
    if variable == "sqrt_s":
        return math.sqrt(lo), math.sqrt(hi), lambda v: v**2, lambda s: 2.0 * np.sqrt(s)
    if variable == "log_s":
        return math.log(lo), math.log(hi), np.exp, lambda s: np.asarray(s, dtype=np.float64)
    if variable == "linear":
        return lo, hi, lambda v: np.asarray(v, dtype=np.float64), np.ones_like
    raise ValueError(f"unknown grid variable {variable!r}; expected one of {GRID_VARIABLES}")


def check_interval(process: ForwardProcess, t_start: float | None, t_end: float | None) -> tuple[float, float]:
    """Defaults (process.t_min, process.t_max); ProcessRangeError outside the range."""
    lo = process.t_min if t_start is None else float(t_start)
    hi = process.t_max if t_end is None else float(t_end)
    process.check_times(torch.tensor([lo, hi], dtype=torch.float64), name="time interval")
    if not hi > lo:
        raise ValueError(f"need t_start < t_end, got [{lo:g}, {hi:g}]")
    return lo, hi


def time_grid(
    process: ForwardProcess,
    n_points: int = 65,
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    variable: str = "log_snr",
    panel_order: int = 5,
) -> TimeGrid:
    """Composite Gauss-Lobatto grid in `variable` with at least `n_points` nodes (module doc)."""
    lo, hi = check_interval(process, t_start, t_end)
    if n_points < panel_order:
        raise ValueError(f"n_points must be >= panel_order = {panel_order}, got {n_points}")
    n_panels = max(1, math.ceil((n_points - 1) / (panel_order - 1)))
    v_lo, v_hi, s_of_v, ds_dv = _variable_maps(process, variable, lo, hi)
    xi, _, local_cum = lobatto_panel(panel_order)
    width = (v_hi - v_lo) / n_panels
    n = n_panels * (panel_order - 1) + 1
    v = np.empty(n)
    cum = np.zeros((n, n))
    for p in range(n_panels):
        start = p * (panel_order - 1)
        idx = slice(start, start + panel_order)
        v[idx] = v_lo + width * (p + xi)
        cum[start + 1 : start + panel_order] = cum[start]  # what the earlier panels hold
        cum[start + 1 : start + panel_order, idx] += width * local_cum[1:]
    s = s_of_v(v)
    s[0], s[-1] = lo, hi
    cum_s = cum * ds_dv(s)[None, :]
    return TimeGrid(s, cum_s[-1].copy(), cum_s, lo, hi, variable)


def trapezoid_grid(
    process: ForwardProcess,
    n_points: int = 100,
    *,
    t_start: float | None = None,
    t_end: float | None = None,
) -> TimeGrid:
    """The paper's scheme: `n_points` equally spaced times and the trapezoid rule."""
    lo, hi = check_interval(process, t_start, t_end)
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    s = np.linspace(lo, hi, n_points)
    h = (hi - lo) / (n_points - 1)
    cum = np.zeros((n_points, n_points))
    for k in range(1, n_points):
        cum[k, : k + 1] = h
        cum[k, 0] = cum[k, k] = h / 2
    return TimeGrid(s, cum[-1].copy(), cum, lo, hi, "trapezoid")


def grid_entropy(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    n_grid: int = 801,
    chunk: int = 1 << 18,
) -> float:
    """Differential entropy -int p ln p (nats) of a density on R^D, D <= 2, by the trapezoid rule
    on an n_grid^D box [lo, hi] that must hold essentially all of the mass (float64)."""
    d = int(lo.numel())
    if d not in (1, 2):
        raise ValueError(f"grid_entropy handles 1 or 2 dimensions, got {d}")
    axes = [torch.linspace(float(lo[i]), float(hi[i]), n_grid, dtype=torch.float64) for i in range(d)]
    w1 = torch.ones(n_grid, dtype=torch.float64)
    w1[0] = w1[-1] = 0.5
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    pts = torch.cartesian_prod(*axes).reshape(-1, d)
    wts = w1 if d == 1 else torch.outer(w1, w1).reshape(-1)
    total = 0.0
    for i in range(0, pts.shape[0], chunk):
        logp = log_prob(pts[i : i + chunk])
        total += float((wts[i : i + chunk] * torch.exp(logp) * logp).sum())
    return -total * cell


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
