"""models.sampling: ODE solvers against closed forms, probability-flow transport of a Gaussian,
the adaptive solver against fixed steps on a mixture, and the PNG helpers."""

from __future__ import annotations

import io
import math

import pytest
import torch
from matplotlib import image as mpimg

from models.data import GaussianMixture
from models.processes import SL, VE, VP, ForwardProcess, ProcessRangeError, VPCosine
from models.sampling import (
    image_grid_png,
    integrate_probability_flow,
    ode_step_times,
    sample_probability_flow,
    scatter_png,
    solve_ode,
)

MEAN = torch.tensor([1.5, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 0.2], dtype=torch.float64)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def gaussian_score(process: ForwardProcess):  # noqa: ANN201
    """Exact score of p_s = N(mu m, mu^2 h^2 + Sigma^2) for data N(m, diag(h^2))."""

    def score(y: torch.Tensor, s: torch.Tensor, labels: object = None) -> torch.Tensor:
        mu = process.mean_scale(s)[:, None]
        return -(y - mu * MEAN) / (mu**2 * STD**2 + process.variance(s)[:, None])

    return score


def marginal(process: ForwardProcess, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    tt = torch.tensor([t], dtype=torch.float64)
    mu = process.mean_scale(tt)
    return mu * MEAN, (mu**2 * STD**2 + process.variance(tt)).sqrt()


def test_fixed_step_solvers_have_orders_one_and_two() -> None:
    f = lambda y, t: -2.0 * y  # noqa: E731
    y0 = torch.ones(1, dtype=torch.float64)
    exact = math.exp(-2.0)
    for solver, order in (("euler", 1), ("heun", 2)):
        errors = [abs(float(solve_ode(f, y0, 0.0, 1.0, solver=solver, steps=n, rho=1.0).y) - exact) for n in (40, 80)]
        assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.1)


def test_adaptive_solver_meets_its_tolerance() -> None:
    f = lambda y, t: torch.cos(torch.tensor(t)) * y  # noqa: E731  y = exp(sin t)
    sol = solve_ode(f, torch.ones(3, dtype=torch.float64), 0.0, 6.0, solver="adaptive", rtol=1e-7, atol=1e-9)
    assert float((sol.y - math.exp(math.sin(6.0))).abs().max()) < 1e-5
    backwards = solve_ode(f, sol.y, 6.0, 0.0, solver="adaptive", rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(backwards.y, torch.ones(3, dtype=torch.float64), rtol=1e-5, atol=0)
    assert sol.nfe == 1 + 6 * (sol.steps + sol.rejected)


def test_ode_step_times_run_from_start_to_end_densest_at_the_end() -> None:
    times = ode_step_times(1.0, 1e-5, 10)
    assert times[0] == 1.0 and times[-1] == pytest.approx(1e-5)
    gaps = [a - b for a, b in zip(times[:-1], times[1:], strict=True)]
    assert all(g > 0 for g in gaps) and gaps[-1] < gaps[0]


@pytest.mark.parametrize("process", [VP(), SL(), VPCosine(), VE()], ids=lambda p: p.kind)
def test_probability_flow_transports_a_gaussian_exactly(process: ForwardProcess) -> None:
    """For Gaussian data the flow is the affine map y_t -> mu_t m + (y_T - mu_T m) sd_t / sd_T."""
    g = torch.Generator().manual_seed(0)
    m_T, sd_T = marginal(process, process.t_max)
    m_0, sd_0 = marginal(process, process.t_min)
    y_T = m_T + sd_T * torch.randn(500, 2, generator=g, dtype=torch.float64)
    exact = m_0 + (y_T - m_T) * sd_0 / sd_T
    sol = integrate_probability_flow(
        gaussian_score(process), process, (500, 2), solver="adaptive", x_start=y_T, rtol=1e-6, atol=1e-6
    )
    assert float((sol.y - exact).abs().max()) < 1e-4
    heun = sample_probability_flow(gaussian_score(process), process, (500, 2), solver="heun", steps=400, x_start=y_T)
    assert float((heun - exact).abs().max()) < 1e-2


def test_samples_from_the_prior_reproduce_the_data_mean_and_covariance() -> None:
    process, n = VP(), 4000
    x = sample_probability_flow(
        gaussian_score(process), process, (n, 2), solver="heun", steps=60, generator=torch.Generator().manual_seed(1)
    ).double()
    mean_se = STD / math.sqrt(n)
    assert ((x.mean(0) - MEAN).abs() < 5 * mean_se + 0.02).all()  # 0.02: prior N(0, 1) vs p_T
    cov = torch.cov(x.T)
    var_se = STD**2 * math.sqrt(2.0 / n)
    assert ((cov.diagonal() - STD**2).abs() < 5 * var_se).all()
    assert abs(float(cov[0, 1])) < 5 * float(STD.prod()) / math.sqrt(n)


def test_adaptive_and_fixed_step_solvers_agree_on_a_mixture() -> None:
    process = VP()
    mixture = GaussianMixture.paper(seed=3)
    score = lambda y, s, lab: mixture.score(y, s, process)  # noqa: E731
    y_T = process.prior_sample((100, 2), torch.Generator().manual_seed(2), dtype=torch.float64)
    adaptive = integrate_probability_flow(
        score, process, (100, 2), solver="adaptive", x_start=y_T, rtol=1e-5, atol=1e-5
    )
    heun = integrate_probability_flow(score, process, (100, 2), solver="heun", steps=150, x_start=y_T)
    assert float((adaptive.y - heun.y).abs().max()) < 1e-2
    assert adaptive.nfe < heun.nfe


def test_sampling_outside_the_process_range_is_refused() -> None:
    with pytest.raises(ProcessRangeError):
        sample_probability_flow(gaussian_score(SL()), SL(), (4, 2), t_start=1.0)


@pytest.mark.parametrize(("shape", "channels"), [((5, 1, 8, 8), 1), ((4, 3, 6, 6), 3), ((3, 7, 7), 1)])
def test_image_grid_is_a_png_of_the_tiled_images(shape: tuple[int, ...], channels: int) -> None:
    x = torch.linspace(-1, 1, math.prod(shape)).reshape(shape)
    png = image_grid_png(x, (-1.0, 1.0), padding=1)
    assert png.startswith(PNG_MAGIC)
    img = mpimg.imread(io.BytesIO(png))
    n, hgt = shape[0], shape[-1]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    assert img.shape[:2] == (rows * (hgt + 1) + 1, cols * (hgt + 1) + 1)


def test_image_grid_maps_the_value_range_to_black_and_white() -> None:
    x = torch.tensor([[[[-1.0, 1.0]]]])
    img = mpimg.imread(io.BytesIO(image_grid_png(x, (-1.0, 1.0), padding=0)))
    assert img[0, 0, 0] == 0.0 and img[0, 1, 0] == 1.0
    with pytest.raises(ValueError):
        image_grid_png(torch.zeros(2, 5), (-1.0, 1.0))


def test_scatter_png() -> None:
    assert scatter_png(torch.randn(50, 2), title="samples").startswith(PNG_MAGIC)
