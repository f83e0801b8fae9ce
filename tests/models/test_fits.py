"""Seed aggregates and the log fit S_NN = a + b ln N against hand-computed and closed-form truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.entropy.fits import aggregate_seeds, log_fit

SIZES = [100, 300, 1000, 3000, 10000, 60000]


def test_aggregate_of_seeds_by_hand() -> None:
    agg = aggregate_seeds([1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.2, 0.4])
    assert agg.n_seeds == 4 and agg.mean == 2.5
    assert agg.spread == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, over K - 1 = 3
    assert agg.stderr == pytest.approx(math.sqrt(0.01 + 0.04 + 0.04 + 0.16) / 4)  # 0.5 / 4
    assert agg.variance_of_mean == pytest.approx(5 / 3 / 4 + 0.125**2)


def test_a_single_seed_has_no_spread_and_counts_its_estimator_error_only() -> None:
    agg = aggregate_seeds([7.0], [0.3])
    assert (agg.n_seeds, agg.mean, agg.spread, agg.stderr) == (1, 7.0, None, 0.3)
    assert agg.variance_of_mean == pytest.approx(0.09)
    with pytest.raises(ValueError):
        aggregate_seeds([1.0, 2.0], [0.1])


def test_points_exactly_on_the_law_give_the_exact_line_and_r2_one() -> None:
    a, b = 1400.0, 101.5
    y = [a + b * math.log(n) for n in SIZES]
    fit = log_fit(SIZES, y, [4.0] * len(SIZES))
    assert fit.a == pytest.approx(a, rel=1e-12) and fit.b == pytest.approx(b, rel=1e-12)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    assert max(abs(r) for r in fit.residuals) < 1e-8
    assert fit.a_stderr_residual == pytest.approx(0.0, abs=1e-6)
    assert fit.n_points == 6 and fit.n_train == SIZES and fit.note is None


def test_r2_and_residuals_by_hand() -> None:
    # x = ln N = 0, L, 2L with L = ln 10 and y = 0, 1, 3: in x/L, b' = 1.5, a = -1/6,
    # residuals (1/6, -1/3, 1/6), SS_res = 1/6, SS_tot = 14/3, R^2 = 27/28
    fit = log_fit([1, 10, 100], [0.0, 1.0, 3.0], [0.0, 0.0, 0.0])
    assert fit.a == pytest.approx(-1 / 6) and fit.b == pytest.approx(1.5 / math.log(10))
    assert fit.residuals == pytest.approx([1 / 6, -1 / 3, 1 / 6])
    assert fit.r_squared == pytest.approx(27 / 28)
    assert fit.a_stderr == 0.0 and fit.b_stderr == 0.0  # no noise given: the sandwich is zero


def test_seed_based_errors_are_the_sandwich_in_closed_form() -> None:
    """b = sum w_i y_i with w_i = (x_i - xbar) / Sxx and a = sum (1/n - xbar w_i) y_i, so for
    independent y_i: Var b = sum w_i^2 sigma_i^2 and Var a = sum (1/n - xbar w_i)^2 sigma_i^2."""
    rng = np.random.default_rng(0)
    var = rng.uniform(0.5, 30.0, size=len(SIZES))
    y = 1000 + 80 * np.log(SIZES) + rng.normal(size=len(SIZES))
    fit = log_fit(SIZES, y.tolist(), var.tolist())
    x = np.log(SIZES)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    c = 1 / len(x) - x.mean() * w
    assert fit.b_stderr == pytest.approx(math.sqrt((w**2 * var).sum()), rel=1e-10)
    assert fit.a_stderr == pytest.approx(math.sqrt((c**2 * var).sum()), rel=1e-10)
    # equal variances: sigma^2 / Sxx for b
    same = log_fit(SIZES, y.tolist(), [9.0] * len(SIZES))
    assert same.b_stderr == pytest.approx(3.0 / math.sqrt(((x - x.mean()) ** 2).sum()), rel=1e-12)


def test_seed_based_errors_match_the_scatter_of_refits() -> None:
    """Draw y_i = a + b ln N_i + sigma_i z many times: the std of the refitted a, b is the
    reported standard error (to Monte Carlo accuracy, 4000 draws: about 2 %)."""
    rng = np.random.default_rng(1)
    sigma = np.array([40.0, 25.0, 10.0, 10.0, 5.0, 30.0])
    truth = 1400 + 100 * np.log(SIZES)
    fits = [log_fit(SIZES, (truth + sigma * rng.normal(size=6)).tolist(), (sigma**2).tolist())
            for _ in range(4000)]
    a_hat = np.array([f.a for f in fits])
    b_hat = np.array([f.b for f in fits])
    assert a_hat.std(ddof=1) == pytest.approx(fits[0].a_stderr, rel=0.06)
    assert b_hat.std(ddof=1) == pytest.approx(fits[0].b_stderr, rel=0.06)
    assert abs(b_hat.mean() - 100) < 4 * fits[0].b_stderr / math.sqrt(4000)


def test_ols_and_residual_errors_agree_with_numpy_polyfit() -> None:
    rng = np.random.default_rng(2)
    y = 500 + 60 * np.log(SIZES) + rng.normal(scale=20, size=6)
    fit = log_fit(SIZES, y.tolist(), [1.0] * 6)
    (b, a), cov = np.polyfit(np.log(SIZES), y, 1, cov=True)  # cov scaled by SS_res / (n - 2)
    assert (fit.a, fit.b) == pytest.approx((a, b), rel=1e-10)
    assert fit.b_stderr_residual == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-8)
    assert fit.a_stderr_residual == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-8)


def test_points_are_sorted_by_size() -> None:
    fit = log_fit([1000, 10, 100], [3.0, 1.0, 2.0], [0.1, 0.1, 0.1])
    assert fit.n_train == [10, 100, 1000] and fit.r_squared == pytest.approx(1.0)


def test_fewer_than_three_sizes_are_said() -> None:
    two = log_fit([100, 1000], [1.0, 2.0], [0.01, 0.04])
    assert two.b == pytest.approx(1 / math.log(10)) and two.r_squared == pytest.approx(1.0)
    assert two.note is not None and "only 2 sizes" in two.note
    assert two.a_stderr_residual is None and two.b_stderr is not None
    one = log_fit([100], [1.0], [0.01])
    assert one.a is None and one.b is None and one.r_squared is None and one.n_points == 1
    assert one.note is not None and "1 size has finished" in one.note
    none = log_fit([], [], [])
    assert none.n_points == 0 and none.a is None
    with pytest.raises(ValueError, match="distinct"):
        log_fit([100, 100], [1.0, 2.0], [0.1, 0.1])
