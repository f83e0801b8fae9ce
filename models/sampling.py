"""Probability-flow ODE sampling (docs/math.md §5) and PNG pictures of samples.

The probability-flow ODE  dy/ds = b(y, s) - sigma(s)^2 / 2 * score(y, s)  carries p_T back to p_data
when integrated from s = T down to s = t_min.  Solvers share one signature (k-diffusion style):
fixed-step Euler and Heun on a grid dense near t_min (s_i = t_end + (T - t_end) (1 - i/n)^rho), and
an adaptive Dormand-Prince 5(4) with FSAL and the usual RMS error control (Hairer, Norsett & Wanner,
"Solving ODEs I", II.4).  All samples share the time steps.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from models.processes import ForwardProcess

Solver = Literal["euler", "heun", "adaptive"]
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
OdeFn = Callable[[torch.Tensor, float], torch.Tensor]

# Dormand-Prince 5(4) tableau: nodes, stages, 5th-order weights (= last stage, FSAL), error weights
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_E = tuple(b5 - b4 for b5, b4 in zip((*_DP_A[6], 0.0), _DP_B4, strict=True))


@dataclass(frozen=True)
class OdeSolution:
    """End state of an integration and its cost."""

    y: torch.Tensor  # state at t1, shape of y0
    nfe: int  # evaluations of the right-hand side
    steps: int  # accepted steps
    rejected: int  # rejected steps (adaptive only)


def ode_step_times(t0: float, t1: float, steps: int, rho: float = 2.0) -> list[float]:
    """The fixed-step solvers' steps + 1 times from t0 to t1, spaced as (1 - i/steps)^rho: dense
    near t1. (Not the quadrature grid of the entropy integrals, `models.entropy.quadrature.time_grid`.)"""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [t1 + (t0 - t1) * (1.0 - i / steps) ** rho for i in range(steps + 1)]


def solve_ode(
    f: OdeFn,
    y0: torch.Tensor,
    t0: float,
    t1: float,
    *,
    solver: Solver = "heun",
    steps: int = 100,
    rho: float = 2.0,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    max_steps: int = 100_000,
) -> OdeSolution:
    """Integrate dy/dt = f(y, t) from t0 to t1 (either direction).

    euler / heun: `steps` steps at `ode_step_times(t0, t1, steps, rho)` (heun costs 2 evaluations a step).
    adaptive: Dormand-Prince 5(4), error RMS over all elements scaled by atol + rtol |y| kept <= 1.
    """
    if solver in ("euler", "heun"):
        times = ode_step_times(t0, t1, steps, rho)
        y, nfe = y0, 0
        for ta, tb in zip(times[:-1], times[1:], strict=True):
            h = tb - ta
            k1 = f(y, ta)
            if solver == "euler":
                y, nfe = y + h * k1, nfe + 1
            else:
                k2 = f(y + h * k1, tb)
                y, nfe = y + (0.5 * h) * (k1 + k2), nfe + 2
        return OdeSolution(y, nfe, steps, 0)
    if solver == "adaptive":
        return _dopri5(f, y0, t0, t1, rtol, atol, max_steps)
    raise ValueError(f"solver must be 'euler', 'heun' or 'adaptive', got {solver!r}")


def _rms(x: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean(x.double() ** 2)))


def _dopri5(f: OdeFn, y: torch.Tensor, t0: float, t1: float, rtol: float, atol: float, max_steps: int) -> OdeSolution:
    span, direction = abs(t1 - t0), math.copysign(1.0, t1 - t0)
    k1 = f(y, t0)
    scale = atol + rtol * y.abs()
    d0, d1 = _rms(y / scale), _rms(k1 / scale)
    h = min(span, 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6 * max(span, 1.0))
    t, nfe, accepted, rejected = t0, 1, 0, 0
    while direction * (t1 - t) > 1e-12 * max(span, 1.0):
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"adaptive solver gave up after {max_steps} steps at t = {t:g}")
        h = min(h, abs(t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * k for a, k in zip(_DP_A[i], ks, strict=False) if a)
            ks.append(f(yi, t + _DP_C[i] * hs))
        y_new = yi  # stage 7 is evaluated at the 5th-order solution (FSAL)
        nfe += 6
        err = hs * sum(e * k for e, k in zip(_DP_E, ks, strict=True) if e)
        err_norm = _rms(err / (atol + rtol * torch.maximum(y.abs(), y_new.abs())))
        if err_norm <= 1.0:
            t = t1 if abs(t1 - (t + hs)) < 1e-12 * max(span, 1.0) else t + hs
            y, k1, accepted = y_new, ks[6], accepted + 1
        else:
            rejected += 1
        factor = 5.0 if err_norm == 0 else min(5.0, max(0.2, 0.9 * err_norm**-0.2))
        h = h * (min(factor, 1.0) if err_norm > 1.0 else factor)
    return OdeSolution(y, nfe, accepted, rejected)


def integrate_probability_flow(
    score_fn: ScoreFn,
    process: ForwardProcess,
    shape: tuple[int, ...],
    *,
    solver: Solver = "heun",
    steps: int = 100,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    t_start: float | None = None,
    t_end: float | None = None,
    data_variance: float | None = None,
    x_start: torch.Tensor | None = None,
    rho: float = 2.0,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> OdeSolution:
    """Draw y_T from the prior N(0, prior_variance I) (or take x_start) and integrate the
    probability-flow ODE from t_start (default T = t_max) down to t_end (default t_min)."""
    t0 = process.t_max if t_start is None else float(t_start)
    t1 = process.t_min if t_end is None else float(t_end)
    process.check_times(torch.tensor([t0, t1], dtype=torch.float64), "sampling times")
    if not t1 < t0:
        raise ValueError(f"sampling runs from t_start down to t_end < t_start, got {t0}, {t1}")
    if x_start is None:
        y = process.prior_sample(tuple(shape), generator, t=t0, data_variance=data_variance, device=device)
    else:
        y = x_start.to(device)
    n = y.shape[0]

    def drift(state: torch.Tensor, t: float) -> torch.Tensor:
        s = torch.full((n,), t, dtype=state.dtype, device=state.device)
        return process.probability_flow_drift(state, s, score_fn(state, s, labels))

    with torch.no_grad():
        return solve_ode(drift, y, t0, t1, solver=solver, steps=steps, rho=rho, rtol=rtol, atol=atol)


def sample_probability_flow(
    score_fn: ScoreFn, process: ForwardProcess, shape: tuple[int, ...], **kwargs: object
) -> torch.Tensor:
    """Samples (n, ...) by the probability-flow ODE; arguments as `integrate_probability_flow`."""
    return integrate_probability_flow(score_fn, process, shape, **kwargs).y  # type: ignore[arg-type]


def image_grid_png(
    x: torch.Tensor | np.ndarray,
    value_range: tuple[float, float] = (-1.0, 1.0),
    nrow: int | None = None,
    padding: int = 1,
) -> bytes:
    """PNG bytes of images (N, C, H, W) or (N, H, W) in a grid; C = 1 grey, C = 3 RGB.

    value_range is mapped to black..white and values outside are clipped.
    """
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] == 0:
        raise ValueError(f"need images (N, 1|3, H, W) or (N, H, W), got shape {a.shape}")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    a = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    n, c, hgt, wid = a.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (hgt + padding) + padding, cols * (wid + padding) + padding, c))
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (hgt + padding), padding + q * (wid + padding)
        grid[top : top + hgt, left : left + wid] = a[i].transpose(1, 2, 0)
    return _png(grid[:, :, 0] if c == 1 else grid, grey=c == 1)


def _png(img: np.ndarray, grey: bool) -> bytes:
    # matplotlib is imported here: it is heavy and only the PNG helpers need it
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, img, format="png", cmap="gray" if grey else None, vmin=0.0, vmax=1.0)
    return buf.getvalue()


def scatter_png(x: torch.Tensor | np.ndarray, *, size: float = 4.0, title: str | None = None) -> bytes:
    """PNG bytes of a scatter plot of 2-D samples (N, 2) (first two coordinates if D > 2)."""
    # matplotlib is imported here: it is heavy and only the PNG helpers need it
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"need samples (N, D >= 2), got shape {a.shape}")
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
