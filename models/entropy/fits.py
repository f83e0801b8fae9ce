"""Sweeps over the training-set size N: aggregates over seeds and the fit S_NN = a + b ln N
(docs/math.md §6). Pure numerics on plain numbers (numpy only).

Per grid point, K seeds give measurements S_k, each with its estimator standard error e_k:

    mean   = (1/K) sum_k S_k
    spread = sqrt( sum_k (S_k - mean)^2 / (K - 1) )        (sample std over seeds; none for K = 1)
    stderr = sqrt( sum_k e_k^2 ) / K                       (the estimator's error of the mean)

and the variance of the mean used by the fit is  sigma^2 = spread^2 / K + stderr^2  (spread
taken as 0 when K = 1, so a single seed contributes its estimator error only).

The fit is ordinary least squares of the means y_i on x_i = ln N_i: with X = [1, x],
beta = (a, b) = (X^T X)^{-1} X^T y. The per-point variances do not weight the fit; they enter
only its standard errors, through the sandwich (the exact covariance of the OLS estimate when the
y_i are independent with variances sigma_i^2):

    Cov(beta) = (X^T X)^{-1} X^T diag(sigma^2) X (X^T X)^{-1}.

The classical residual-based errors, s^2 (X^T X)^{-1} with s^2 = SS_res / (n - 2), are also given
(n >= 3): they include lack of fit of the log law, which the seed-based ones do not.
R^2 = 1 - SS_res / SS_tot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedAggregate:
    """One grid point's S_NN over its seeds (nats)."""

    n_seeds: int
    mean: float
    spread: float | None  # sample standard deviation over seeds; None for a single seed
    stderr: float  # estimator standard error of the mean, pooled over seeds

    @property
    def variance_of_mean(self) -> float:
        """spread^2 / K + stderr^2 (spread counted as 0 for one seed)."""
        spread = self.spread or 0.0
        return spread**2 / self.n_seeds + self.stderr**2


def aggregate_seeds(values: Sequence[float], stderrs: Sequence[float]) -> SeedAggregate:
    """Mean, spread and pooled estimator stderr of one grid point's seeds."""
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(stderrs, dtype=np.float64)
    if v.ndim != 1 or v.shape != e.shape or len(v) == 0:
        raise ValueError(f"need as many stderrs as values (at least one), got {v.shape}, {e.shape}")
    k = len(v)
    spread = float(v.std(ddof=1)) if k > 1 else None
    return SeedAggregate(n_seeds=k, mean=float(v.mean()), spread=spread,
                         stderr=float(math.sqrt(float((e**2).sum())) / k))


@dataclass(frozen=True)
class LogFit:
    """S_NN = a + b ln N by ordinary least squares over the finished sizes."""

    n_points: int
    n_train: list[int]
    a: float | None
    b: float | None
    a_stderr: float | None  # from the per-point variances (seed spread and estimator stderr)
    b_stderr: float | None
    a_stderr_residual: float | None  # classical, from the residuals (n_points >= 3)
    b_stderr_residual: float | None
    r_squared: float | None
    residuals: list[float]  # y_i - (a + b ln N_i), in the order of n_train
    note: str | None  # says when fewer than 3 sizes have finished


def log_fit(n_train: Sequence[float], means: Sequence[float],
            variances: Sequence[float]) -> LogFit:
    """Fit `means` (S_NN per size) against ln `n_train`; `variances` are the sigma_i^2 of the
    means (`SeedAggregate.variance_of_mean`). Points are sorted by N."""
    order = np.argsort(np.asarray(n_train, dtype=np.float64), kind="stable")
    n = np.asarray(n_train, dtype=np.float64)[order]
    y = np.asarray(means, dtype=np.float64)[order]
    var = np.asarray(variances, dtype=np.float64)[order]
    if not (n.shape == y.shape == var.shape) or n.ndim != 1:
        raise ValueError("n_train, means and variances must be 1-d of equal length")
    if (n <= 0).any() or len(np.unique(n)) != len(n):
        raise ValueError(f"sizes must be positive and distinct, got {n.tolist()}")
    sizes = [int(v) for v in n]
    k = len(n)
    if k < 2:
        return LogFit(k, sizes, None, None, None, None, None, None, None, [],
                      f"{k} size{'s have' if k != 1 else ' has'} finished; a fit needs at least 2 "
                      "(and 3 to judge it)")
    x = np.stack([np.ones(k), np.log(n)], axis=1)
    xtx_inv = np.linalg.inv(x.T @ x)
    beta = xtx_inv @ x.T @ y
    residuals = y - x @ beta
    cov = xtx_inv @ x.T @ np.diag(var) @ x @ xtx_inv
    ss_res = float(residuals @ residuals)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
    a_res = b_res = None
    note = None
    if k >= 3:
        cov_res = xtx_inv * ss_res / (k - 2)
        a_res, b_res = float(math.sqrt(cov_res[0, 0])), float(math.sqrt(cov_res[1, 1]))
    else:
        note = ("only 2 sizes have finished: the line passes through both (R^2 = 1 trivially, "
                "no residual degrees of freedom); 3 or more are needed to judge the log law")
    return LogFit(
        n_points=k, n_train=sizes, a=float(beta[0]), b=float(beta[1]),
        a_stderr=float(math.sqrt(max(cov[0, 0], 0.0))),
        b_stderr=float(math.sqrt(max(cov[1, 1], 0.0))),
        a_stderr_residual=a_res, b_stderr_residual=b_res, r_squared=r2,
        residuals=[float(r) for r in residuals], note=note)
