"""Time grids: exactness on polynomials, the closed-form Gaussian rate, ranges; grid entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.entropy.estimators import total_entropy_gaussian
from models.entropy.quadrature import grid_entropy, lobatto_panel, s_at_log_snr, time_grid, trapezoid_grid
from models.processes import SL, VE, VP, ForwardProcess, ProcessRangeError, VPCosine

PROCESSES = [VP(), VP(kappa=0.1), VPCosine(), SL(), VE()]
IDS = ["vp", "vpx", "vp_cosine", "sl", "ve"]
MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
STD = torch.tensor([0.7, 0.3], dtype=torch.float64)


def gaussian_rate(process: ForwardProcess, s: np.ndarray) -> np.ndarray:
    """Exact dS_tot/ds for data N(MEAN, diag(STD^2)): sigma^2/2 E||e||^2, e linear in y."""
    st = torch.as_tensor(s, dtype=torch.float64)
    mu, var = process.mean_scale(st)[:, None], process.variance(st)[:, None]
    p = process.equilibrium_precision(st)[:, None]
    v = mu**2 * STD**2 + var
    alpha, beta = p - 1 / v, mu * MEAN / v  # e = alpha y + beta
    ey, ey2 = mu * MEAN, mu**2 * (MEAN**2 + STD**2) + var
    return (0.5 * process.diffusion_squared(st) * (alpha**2 * ey2 + 2 * alpha * beta * ey + beta**2).sum(1)).numpy()


@pytest.mark.parametrize("order", [2, 3, 5, 7])
def test_lobatto_panel_is_exact_for_polynomials(order: int) -> None:
    xi, w, cum = lobatto_panel(order)
    assert xi[0] == 0.0 and xi[-1] == 1.0
    for degree in range(2 * order - 2):  # Lobatto: exact up to degree 2n - 3
        assert w @ xi**degree == pytest.approx(1 / (degree + 1), rel=1e-12)
    for degree in range(order):  # the interpolant is exact, so every cumulative row is too
        np.testing.assert_allclose(cum @ xi**degree, xi ** (degree + 1) / (degree + 1), atol=1e-13)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_log_snr_grid_integrates_the_gaussian_rate(process: ForwardProcess) -> None:
    grid = time_grid(process, 129)
    exact = total_entropy_gaussian(MEAN, STD, process, t_start=process.t_min)
    assert grid.integrate(gaussian_rate(process, grid.s)) == pytest.approx(exact, rel=1e-8)
    cumulative = grid.cumulative_weights @ gaussian_rate(process, grid.s)
    for k in (16, 64, 100):
        partial = total_entropy_gaussian(MEAN, STD, process, grid.s[k], t_start=process.t_min)
        assert cumulative[k] == pytest.approx(partial, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_grid_stays_in_range_and_ends_on_the_interval(process: ForwardProcess) -> None:
    grid = time_grid(process, 64)
    assert len(grid) == 65 and grid.s[0] == process.t_min and grid.s[-1] == process.t_max
    assert np.all(np.diff(grid.s) > 0) and np.all(grid.weights > 0)
    np.testing.assert_allclose(grid.cumulative_weights[-1], grid.weights)
    process.check_times(torch.as_tensor(grid.s))


@pytest.mark.parametrize("variable", ["sqrt_s", "log_s", "linear"])
def test_other_variables_integrate_the_gaussian_rate(variable: str) -> None:
    process = VP()
    grid = time_grid(process, 257, variable=variable)
    exact = total_entropy_gaussian(MEAN, STD, process, t_start=process.t_min)
    assert grid.integrate(gaussian_rate(process, grid.s)) == pytest.approx(exact, rel=1e-6)


def test_log_snr_inversion() -> None:
    process = SL()
    s = np.array([1e-5, 3e-4, 0.1, 0.5, 0.99, 1 - 1e-5])
    lam = process.log_snr(torch.as_tensor(s)).numpy()
    np.testing.assert_allclose(s_at_log_snr(process, lam, process.t_min, process.t_max), s, rtol=1e-9)


def test_trapezoid_grid_is_the_papers_scheme() -> None:
    grid = trapezoid_grid(VP(), 100)
    assert len(grid) == 100 and grid.s[0] == 1e-5 and grid.s[-1] == 1.0
    h = (1.0 - 1e-5) / 99
    assert grid.weights[0] == pytest.approx(h / 2) and grid.weights[1] == pytest.approx(h)
    assert grid.integrate(grid.s) == pytest.approx((1 - 1e-10) / 2)


def test_interval_beyond_the_range_raises() -> None:
    with pytest.raises(ProcessRangeError):
        time_grid(SL(), 65, t_end=1.0)  # sigma is infinite at s = 1 for SL
    with pytest.raises(ProcessRangeError):
        time_grid(VP(), 65, t_start=0.0)
    with pytest.raises(ValueError, match="t_start < t_end"):
        time_grid(VP(), 65, t_start=0.5, t_end=0.5)
    with pytest.raises(ValueError, match="unknown grid variable"):
        time_grid(VP(), 65, variable="cubic")


@pytest.mark.parametrize("dim", [1, 2])
def test_grid_entropy_of_a_gaussian(dim: int) -> None:
    std = torch.tensor([0.3, 2.0], dtype=torch.float64)[:dim]
    dist = torch.distributions.Normal(torch.zeros(dim, dtype=torch.float64), std)
    h = grid_entropy(lambda y: dist.log_prob(y).sum(1), -12 * std, 12 * std, 601)
    assert h == pytest.approx(0.5 * float(torch.log(2 * math.pi * math.e * std**2).sum()), rel=1e-9)


# ---- the Monte Carlo engine's control variates: their "known" means must be exact ----
@pytest.mark.parametrize(
    ("source_kind", "dim"), [("pool", 2), ("mixture", 2), ("mixture", 3), ("pool", 7), ("mixture", 20)]
)
def test_control_variate_means_are_exact(dim: int, source_kind: str) -> None:
    from models.data import GaussianMixture
    from models.entropy.control_variates import KernelFeatures, PolynomialFeatures, mixture_source, pool_source
    from models.entropy.quadrature import NodeTimes

    mixture = GaussianMixture.paper(n_components=3, dim=dim, seed=dim)
    if source_kind == "pool":
        pool = mixture.sample(300, torch.Generator().manual_seed(0), dtype=torch.float64)
        assert isinstance(pool, torch.Tensor)
        source = pool_source(pool, None, "cpu")
    else:
        source = mixture_source(mixture, "cpu", torch.float64)
    process = VP()
    times = NodeTimes.at(process, np.array([1e-3, 0.1, 0.4]), "cpu")
    poly, kernel = PolynomialFeatures(source), KernelFeatures(source, seed=0, device="cpu")
    gen = torch.Generator().manual_seed(1)
    n = 40000
    for i in range(3):
        t = times.take(torch.full((n,), i, dtype=torch.long))
        x0, _ = source.draw(n, gen)
        y = t.mu[:, None] * x0 + t.std[:, None] * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        feats = torch.cat([poly(y), kernel(y, t)], dim=1)
        known = torch.cat([poly.means(times.mu, times.std)[i], kernel.means(times)[i]])
        se = feats.std(0) / math.sqrt(n)
        assert torch.all((feats.mean(0) - known).abs() <= 5 * se + 1e-12), (i, feats.mean(0) - known, se)
