"""Estimators against independent truth: closed-form Gaussian S_tot, grid-quadrature mixture
entropies, exact -log p(x), constant integrands; honest standard errors; clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.data import GaussianMixture
from models.entropy.closed_forms import mixture_entropy
from models.entropy.estimators import (
    MeasurementConfig,
    data_entropy,
    density_bound,
    neural_entropy,
    total_entropy_gaussian,
    total_entropy_mixture,
    total_entropy_mixture_exact,
)
from models.entropy.quadrature import time_grid
from models.processes import SL, VE, VP, ForwardProcess, ProcessRangeError, VPCosine

PROCESSES = [VP(), VPCosine(), SL(), VE()]
IDS = ["vp", "vp_cosine", "sl", "ve"]
GAUSS = GaussianMixture([1.0], [[0.5, -1.0]], [[0.7, 0.3]])
MIX = GaussianMixture.paper()  # the paper's 2-D, 5-component mixture


def mixture_e(mixture: GaussianMixture, process: ForwardProcess):  # type: ignore[no-untyped-def]
    """e(y, s) = grad log p_s - grad log p_eq from the exact mixture score, in float32 like a network."""

    def e(y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return (mixture.score(y, s, process) - process.equilibrium_score(y, s)).to(y.dtype)

    return e


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_single_gaussian_plain_monte_carlo_matches_closed_form(process: ForwardProcess) -> None:
    """Plain Monte Carlo (no control variates): within 3 standard errors, stderr below 1 %."""
    exact = total_entropy_gaussian(GAUSS.means[0], GAUSS.stds[0], process, t_start=process.t_min)
    result = total_entropy_mixture(GAUSS, process, MeasurementConfig(n_samples=60000, control_variates=False))
    assert abs(result.total.mean - exact) < 3 * result.total.stderr
    assert result.total.relative_stderr < 0.01


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_single_gaussian_total_entropy_matches_closed_form(process: ForwardProcess) -> None:
    """The default estimator: its Gaussian-fit control variate is exact for Gaussian data, so what
    is left is the quadrature error (~1e-6): within 0.5 % and within 3 stderr + that."""
    exact = total_entropy_gaussian(GAUSS.means[0], GAUSS.stds[0], process, t_start=process.t_min)
    result = total_entropy_mixture(GAUSS, process, MeasurementConfig(n_samples=4000))
    err = abs(result.total.mean - exact)
    assert err < 0.005 * exact and err < 3 * result.total.stderr + 1e-5 * exact


def test_closed_form_from_zero_and_ve_formula() -> None:
    mean, std = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 2.0])
    ve = VE()
    var_t = float(ve.variance(torch.tensor([1.0], dtype=torch.float64)))
    expected = 0.5 * float(torch.log((std.double() ** 2 + var_t) / std.double() ** 2).sum())
    assert total_entropy_gaussian(mean, std, ve, 1.0) == pytest.approx(expected, rel=1e-12)
    vp = VP()  # KL(p_0 || N(0, 1)) - KL(p_1 || N(0, 1)), KL(N(c, w) || N(0, 1)) = (w + c^2 - 1 - ln w) / 2
    mu = float(vp.mean_scale(torch.tensor([1.0], dtype=torch.float64)))
    w1 = mu**2 * std.double() ** 2 + 1 - mu**2
    kl0 = 0.5 * float((std.double() ** 2 + mean.double() ** 2 - 1 - torch.log(std.double() ** 2)).sum())
    kl1 = 0.5 * float((w1 + mu**2 * mean.double() ** 2 - 1 - torch.log(w1)).sum())
    assert total_entropy_gaussian(mean, std, vp, 1.0) == pytest.approx(kl0 - kl1, rel=1e-12)


@pytest.mark.parametrize("process", [VP(), SL()], ids=["vp", "sl"])
def test_mixture_total_entropy_matches_grid_reference(process: ForwardProcess) -> None:
    reference = total_entropy_mixture_exact(MIX, process, t_start=process.t_min)
    result = total_entropy_mixture(MIX, process, MeasurementConfig(n_samples=30000, seed=3))
    assert abs(result.total.mean - reference) < 3 * result.total.stderr
    assert result.total.relative_stderr < 0.006


def test_standard_errors_are_honest() -> None:
    """z-scores of 24 independent runs against the reference have a spread near 1."""
    process = VP()
    reference = total_entropy_mixture_exact(MIX, process, t_start=process.t_min)
    z = []
    for seed in range(24):
        r = total_entropy_mixture(MIX, process, MeasurementConfig(n_samples=6400, n_times=33, seed=seed))
        z.append((r.total.mean - reference) / r.total.stderr)
    assert 0.6 < float(np.std(z)) < 1.5 and abs(float(np.mean(z))) < 0.8


def test_curve_columns_are_consistent() -> None:
    result = total_entropy_mixture(MIX, VP(), MeasurementConfig(n_times=32, n_samples=8000))
    c = result.curve
    assert len(c.s) == 33 and c.s[0] == VP().t_min and c.s[-1] == VP().t_max
    assert np.all(c.rate > 0) and np.all(c.rate_stderr >= 0) and np.all(np.diff(c.cumulative) > -1e-9)
    assert c.cumulative[0] == 0 and c.cumulative[-1] == pytest.approx(result.total.mean)
    assert c.cumulative_stderr[-1] == pytest.approx(result.total.stderr)
    assert result.bits().mean == pytest.approx(result.total.mean / math.log(2))
    assert result.bits_per_dim().mean == pytest.approx(result.total.mean / (2 * math.log(2)))
    assert set(result.to_dict()["curve"]) == {"s", "rate", "rate_stderr", "cumulative", "cumulative_stderr"}


def test_neural_entropy_of_a_constant_e_is_exact() -> None:
    """e = c gives S = |c|^2 / 2 int sigma^2 ds; for VP int beta = b0 T + (b1 - b0) T^2 / 2."""
    process = VP()
    c = torch.tensor([0.3, -0.4])

    def e_const(y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return c.expand_as(y)

    x0 = torch.randn(100, 2)
    result = neural_entropy(e_const, process, x0, MeasurementConfig(n_samples=3000))
    t0, t1 = process.t_min, process.t_max
    int_beta = 0.1 * (t1 - t0) + 15.9 * (t1**2 - t0**2) / 2
    assert result.total.mean == pytest.approx(0.25 / 2 * int_beta, rel=1e-6)


def test_neural_entropy_on_an_image_pool_with_labels_matches_exact_rates() -> None:
    """Image-shaped pool (N, 1, 2, 1), a class-conditional e: e = label-dependent scale * y."""
    process = VP()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(500, 1, 2, 1, generator=gen)
    labels = torch.arange(500) % 2
    scale = torch.tensor([0.5, 2.0])

    def e_lin(y: torch.Tensor, s: torch.Tensor, lab: torch.Tensor | None) -> torch.Tensor:
        assert lab is not None and y.shape[1:] == (1, 2, 1) and s.shape == y.shape[:1]
        return scale[lab].reshape(-1, 1, 1, 1) * y

    result = neural_entropy(e_lin, process, x0, MeasurementConfig(n_samples=20000, seed=1), labels=labels)
    # exact: sum over nodes of w_i sigma^2/2 E c^2 (mu^2 |x0|^2 + D Sigma^2) over the pool
    s = torch.as_tensor(result.curve.s)
    mu2, var, g2 = process.mean_scale(s) ** 2, process.variance(s), process.diffusion_squared(s)
    sq = (x0.double() ** 2).flatten(1).sum(1)
    c2 = scale.double()[labels] ** 2
    exact_rate = (0.5 * g2 * ((c2 * sq).mean() * mu2 + c2.mean() * 2 * var)).numpy()
    exact_total = time_grid(process, 64).integrate(exact_rate)
    assert abs(result.total.mean - exact_total) < 3 * result.total.stderr
    z = (result.curve.rate - exact_rate) / result.curve.rate_stderr
    assert float(np.mean(z**2)) < 2.0 and float(np.abs(z).max()) < 6.0  # skewed throws: per-node t


def test_density_bound_with_exact_score_sits_on_exact_nll() -> None:
    process = VP()
    x = MIX.sample(400, torch.Generator().manual_seed(5), dtype=torch.float32)
    assert isinstance(x, torch.Tensor)

    def score(y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return MIX.score(y, s, process).to(y.dtype)

    bound = density_bound(score, process, x, MeasurementConfig(n_samples=40000, seed=1))
    exact = float(-MIX.log_prob(x.double()).mean())
    # prior mismatch: E_x E_{y_T|x}[log p_T - log pi] >= 0, tiny at T = 1 for VP
    t = torch.full((4000,), process.t_max, dtype=torch.float64)
    xs = x.double().repeat(10, 1)
    y_t = process.perturb(xs, t, torch.randn(xs.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    mismatch = float((MIX.log_prob_at(y_t, t, process) - process.prior_log_prob(y_t)).mean())
    assert abs(bound.nats.mean - (exact + mismatch)) < 3 * bound.nats.stderr + 0.01
    assert bound.bits_per_dim.mean == pytest.approx(bound.nats.mean / (2 * math.log(2)))
    eight_bit = density_bound(score, process, x, MeasurementConfig(n_samples=4000), value_range=(-1.0, 1.0))
    assert eight_bit.offset_bits_per_dim == 7.0


def test_mixture_entropy_of_a_single_gaussian() -> None:
    g = GaussianMixture([1.0], [[0.3, -0.2]], [[0.5, 0.9]])
    process = VP()
    s = torch.tensor([0.2], dtype=torch.float64)
    v = process.mean_scale(s) ** 2 * g.stds[0] ** 2 + process.variance(s)
    exact = 0.5 * float(torch.log(2 * math.pi * math.e * v).sum())
    assert mixture_entropy(g, process, 0.2) == pytest.approx(exact, rel=1e-9)


def test_data_entropy_recovers_the_mixture_entropy() -> None:
    process = VP()
    s_tot = total_entropy_mixture(MIX, process, MeasurementConfig(n_samples=20000, t_min=process.t_min))
    pool = MIX.sample(50000, torch.Generator().manual_seed(9), dtype=torch.float64)
    assert isinstance(pool, torch.Tensor)
    h = data_entropy(s_tot, process, pool)
    h_exact = mixture_entropy(MIX, process, process.t_min)
    assert abs(h.mean - h_exact) < 3 * h.stderr + 0.01


def test_reproducible_under_a_seed() -> None:
    config = MeasurementConfig(n_samples=4000, seed=11)
    a = total_entropy_mixture(MIX, SL(), config)
    b = total_entropy_mixture(MIX, SL(), config)
    c = total_entropy_mixture(MIX, SL(), MeasurementConfig(n_samples=4000, seed=12))
    assert a.total == b.total and np.array_equal(a.curve.rate, b.curve.rate) and c.total != a.total


def test_target_rel_stderr_stops_early() -> None:
    config = MeasurementConfig(n_samples=200000, target_rel_stderr=0.01)
    result = total_entropy_mixture(MIX, VP(), config)
    assert result.n_evaluations < 100000 and result.total.relative_stderr <= 0.01


def test_bad_inputs_raise_clear_errors() -> None:
    process = SL()
    e = mixture_e(MIX, process)
    good = torch.randn(50, 2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        neural_entropy(e, process, torch.tensor([[0.0, float("nan")]] * 3))
    with pytest.raises(ValueError, match="empty"):
        neural_entropy(e, process, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="shape"):
        neural_entropy(e, process, torch.zeros(5))
    with pytest.raises(ProcessRangeError):
        neural_entropy(e, process, good, MeasurementConfig(t_max=1.0))  # beyond SL's range
    with pytest.raises(ProcessRangeError):
        total_entropy_gaussian([0.0], [1.0], VP(), 1.5)
    with pytest.raises(ValueError, match="labels"):
        neural_entropy(e, process, good, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="output has shape"):
        neural_entropy(lambda y, s, lab: y[:, :1], process, good, MeasurementConfig(n_samples=4000))
    with pytest.raises(ValueError, match="NaN or infinite"):
        neural_entropy(lambda y, s, lab: y * float("nan"), process, good, MeasurementConfig(n_samples=4000))
    with pytest.raises(ValueError, match="too small"):
        neural_entropy(e, process, good, MeasurementConfig(n_samples=100))
    with pytest.raises(ValueError, match="grid"):
        MeasurementConfig(grid="cubic")
    with pytest.raises(ValueError, match="unknown measurement settings"):
        MeasurementConfig.from_dict({"n_samples": 10, "speed": "fast"})


@pytest.mark.parametrize("kind", ["rate", "bound"])
def test_gaussian_fit_control_variate_means_are_exact_on_a_pool(kind: str) -> None:
    from models.entropy.control_variates import pool_source
    from models.entropy.estimators import _BoundIntegrand, _RateIntegrand
    from models.entropy.quadrature import NodeTimes

    pool = torch.randn(300, 1, 3, 2, dtype=torch.float64) * torch.tensor([0.2, 1.0]) + 0.5
    source = pool_source(pool, None, "cpu")
    cls = _RateIntegrand if kind == "rate" else _BoundIntegrand
    integrand = cls(lambda y, s, lab: torch.zeros_like(y), source, 0, "cpu")
    process = SL(sigma0=0.5)
    times = NodeTimes.at(process, np.array([1e-3, 0.3, 0.9]), "cpu")
    known = integrand.feature_means(times)
    gen = torch.Generator().manual_seed(0)
    n = 100000
    for i in range(3):
        t = times.take(torch.full((n,), i, dtype=torch.long))
        x0, _ = source.draw(n, gen)
        _, feats = integrand(x0, None, torch.randn(x0.shape, generator=gen, dtype=torch.float64), t)
        se = feats.std(0) / math.sqrt(n)
        assert torch.all((feats.mean(0) - known[i]).abs() <= 5 * se + 1e-9 * known[i].abs()), i


def test_measurement_config_refuses_budgets_below_the_pilot_at_construction() -> None:
    config = MeasurementConfig(n_times=64)
    assert config.n_grid_points == 65  # 16 Lobatto panels of order 5
    assert config.min_evaluations == 16 * 65
    MeasurementConfig(n_times=64, n_samples=config.min_evaluations)  # the least budget is accepted
    with pytest.raises(ValueError, match="need at least 1040"):
        MeasurementConfig(n_times=64, n_samples=config.min_evaluations - 1)
    with pytest.raises(ValueError, match="n_times must be >= panel_order"):
        MeasurementConfig(n_times=3)
