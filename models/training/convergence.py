"""Has a training run converged? A verdict from its S_NN trajectory (docs/math.md §4.7).

During training S_NN is estimated on a few log-spaced epochs. A run whose estimates still climb
slowly is not converged even when two neighbouring estimates agree, so the verdict fits the trend
against log(epoch) over the last two doublings of the epochs,

    S_NN(epoch) ~ c + d ln(epoch)        (ordinary least squares),

and reads the drift per doubling, d ln 2, relative to the fitted level at the last epoch. Its
standard error uses the larger of the residual scatter and the estimates' own stderr. The run is
`converged` when the drift is within the tolerance with a margin of two standard errors,
`not_converged` otherwise, and `too_short` while fewer than `MIN_POINTS` estimates lie in the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

MIN_POINTS = 4  # estimates needed in the window
WINDOW_FACTOR = 4.0  # the window: epochs >= last epoch / 4 (its last two doublings)
EPOCH_RATIO = 1.25  # evaluation epochs are spaced by about this factor
DEFAULT_TOLERANCE = 0.02  # relative drift of S_NN per doubling of the epochs

VerdictName = Literal["converged", "not_converged", "too_short"]


@dataclass(frozen=True)
class TrajectoryPoint:
    """S_NN (nats) of the network after `epoch` epochs, with its estimator stderr."""

    epoch: int
    nats: float
    stderr: float


@dataclass(frozen=True)
class ConvergenceVerdict:
    verdict: VerdictName
    tolerance: float  # allowed |relative drift| per doubling of the epochs
    relative_drift: float | None  # fitted change of S_NN per doubling / fitted level at the end
    relative_drift_stderr: float | None
    level: float | None  # fitted S_NN at the last epoch, nats
    extrapolated: float | None  # the trend's S_NN at twice the last epoch, nats
    window: tuple[int, int] | None  # first and last epoch of the fit
    reason: str


def evaluation_epochs(epochs: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Log-spaced epochs 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 19, ... (ratio ~1.25), the last epoch and
    `extra`."""
    chosen = {epochs, *(e for e in extra if 1 <= e <= epochs)}
    value = 1.0
    while value <= epochs:
        chosen.add(int(round(value)))
        value = max(value * EPOCH_RATIO, value + 1.0)
    return sorted(chosen)


def convergence_verdict(points: list[TrajectoryPoint], tolerance: float = DEFAULT_TOLERANCE
                        ) -> ConvergenceVerdict:
    """The verdict on a trajectory (points in increasing epoch order)."""
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if not points:
        return ConvergenceVerdict("too_short", tolerance, None, None, None, None, None,
                                  "no estimate yet")
    last = points[-1].epoch
    window = [p for p in points if p.epoch * WINDOW_FACTOR >= last]
    if len(window) < MIN_POINTS or len({p.epoch for p in window}) < 2:
        return ConvergenceVerdict(
            "too_short", tolerance, None, None, None, None, None,
            f"{len(window)} estimates over the last two doublings of the epochs (from epoch "
            f"{window[0].epoch} to {last}); the trend needs {MIN_POINTS}")
    x = [math.log(p.epoch) for p in window]
    y = [p.nats for p in window]
    n = len(window)
    x_mean, y_mean = sum(x) / n, sum(y) / n
    sxx = sum((xi - x_mean) ** 2 for xi in x)
    slope = sum((xi - x_mean) * (yi - y_mean) for xi, yi in zip(x, y, strict=True)) / sxx
    intercept = y_mean - slope * x_mean
    residual = sum((yi - intercept - slope * xi) ** 2 for xi, yi in zip(x, y, strict=True)) / (n - 2) \
        if n > 2 else 0.0
    noise = sum(p.stderr**2 for p in window) / n
    slope_stderr = math.sqrt(max(residual, noise) / sxx)
    level = intercept + slope * math.log(last)
    scale = abs(level) if level != 0 else math.inf
    drift = slope * math.log(2.0) / scale
    drift_stderr = slope_stderr * math.log(2.0) / scale
    extrapolated = intercept + slope * math.log(2.0 * last)
    span = (window[0].epoch, last)
    bound = abs(drift) + 2.0 * drift_stderr
    if bound <= tolerance:
        verdict: VerdictName = "converged"
        reason = (f"S_NN changes by {drift:+.2%} ± {drift_stderr:.2%} per doubling of the epochs "
                  f"(epochs {span[0]}-{span[1]}), within the tolerance of {tolerance:.1%}")
    else:
        verdict = "not_converged"
        reason = (f"S_NN changes by {drift:+.2%} ± {drift_stderr:.2%} per doubling of the epochs "
                  f"(epochs {span[0]}-{span[1]}); that is not within {tolerance:.1%} with two "
                  f"standard errors to spare; the trend reaches {extrapolated:.4g} nats at epoch "
                  f"{2 * last}")
    return ConvergenceVerdict(verdict, tolerance, drift, drift_stderr, level, extrapolated, span,
                              reason)
