"""Forward processes against independent truth: autograd, Euler-Maruyama simulation, ranges."""

from __future__ import annotations

import math

import pytest
import torch

from models.processes import SL, VE, VP, ForwardProcess, ProcessRangeError, VPCosine, process_from_spec

PROCESSES = [VP(), VP(kappa=0.1), VPCosine(), SL(), VE()]
IDS = ["vp", "vpx", "vp_cosine", "sl", "ve"]


def grad(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d out.sum() / dx, zero where out does not depend on x (VE's flat equilibrium, mu = 1)."""
    if not out.requires_grad:
        return torch.zeros_like(x)
    return torch.autograd.grad(out.sum(), x)[0]


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_equilibrium_score_is_gradient_of_equilibrium_log_prob(process: ForwardProcess) -> None:
    y = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    s = torch.linspace(0.01, 0.9, 7, dtype=torch.float64)
    expected = grad(process.equilibrium_log_prob(y, s), y)
    torch.testing.assert_close(process.equilibrium_score(y.detach(), s), expected)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_mean_scale_and_variance_solve_their_odes(process: ForwardProcess) -> None:
    """d ln mu / ds = -a and d Sigma^2 / ds = sigma^2 - 2 a Sigma^2 (docs/math.md §1.1), by autograd."""
    s = torch.linspace(0.02, 0.95 * process.t_max, 9, dtype=torch.float64, requires_grad=True)
    dlogmu, dvar = grad(process.log_mean_scale(s), s), grad(process.variance(s), s)
    s = s.detach()
    torch.testing.assert_close(dlogmu, -process.drift_rate(s))
    expected = process.diffusion_squared(s) - 2 * process.drift_rate(s) * process.variance(s)
    torch.testing.assert_close(dvar, expected)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_log_snr_decreases_at_rate_sigma2_over_Sigma2(process: ForwardProcess) -> None:
    """d log-SNR / ds = -sigma^2 / Sigma^2: the identity behind the log-SNR quadrature grid."""
    s = torch.linspace(1e-3, process.t_max, 11, dtype=torch.float64, requires_grad=True)
    dlam = grad(process.log_snr(s), s)
    s = s.detach()
    torch.testing.assert_close(dlam, -process.diffusion_squared(s) / process.variance(s))


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_transition_moments_match_euler_maruyama(process: ForwardProcess) -> None:
    """Simulate dY = -a Y ds + sigma dB from Y_0 = x0 (stochastic Heun, weak order 2 for additive
    noise); compare the mean and variance at s_end with mu x0 and Sigma^2, to the MC error."""
    gen = torch.Generator().manual_seed(0)
    n_paths, n_steps = 40000, 200
    s_end = 0.6 * process.t_max
    x0 = torch.tensor([1.5, -0.7], dtype=torch.float64)
    y = x0.expand(n_paths, 2).clone()
    ds = s_end / n_steps
    for k in range(n_steps):
        s0 = torch.full((1,), k * ds, dtype=torch.float64)
        s1 = s0 + ds
        kick = 0.5 * (process.diffusion(s0) + process.diffusion(s1)) * math.sqrt(ds)
        noise = kick * torch.randn(n_paths, 2, generator=gen, dtype=torch.float64)
        pred = y - process.drift_rate(s0) * y * ds + noise
        y = y - 0.5 * (process.drift_rate(s0) * y + process.drift_rate(s1) * pred) * ds + noise
    t = torch.tensor([s_end], dtype=torch.float64)
    mu, var = float(process.mean_scale(t)), float(process.variance(t))
    se_mean, se_var = math.sqrt(var / n_paths), var * math.sqrt(2.0 / n_paths)
    torch.testing.assert_close(y.mean(0), mu * x0, atol=4 * se_mean + 1e-3 * abs(mu), rtol=0)
    torch.testing.assert_close(y.var(0), torch.full((2,), var, dtype=torch.float64),
                               atol=4 * se_var + 1e-3 * var, rtol=0)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_times_outside_the_range_raise(process: ForwardProcess) -> None:
    process.check_times(torch.tensor([process.t_min, process.t_max]))  # float32 rounding is fine
    process.check_times(torch.tensor([process.t_min, process.t_max], dtype=torch.float64))
    with pytest.raises(ProcessRangeError, match="must lie in"):
        process.check_times(torch.tensor([process.t_max + 1e-3]))
    with pytest.raises(ProcessRangeError):
        process.check_times(torch.tensor([0.0]))
    with pytest.raises(ProcessRangeError, match="finite"):
        process.check_times(torch.tensor([float("nan")]))


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_spec_round_trips(process: ForwardProcess) -> None:
    rebuilt = process_from_spec(process.spec())
    assert rebuilt.spec() == process.spec() and type(rebuilt) is type(process)


def test_bad_specs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown process kind"):
        process_from_spec({"kind": "subvp"})
    with pytest.raises(ValueError, match="bad parameters"):
        process_from_spec({"kind": "vp", "beta": 3})
    with pytest.raises(ValueError):
        VP(beta_min=5.0, beta_max=1.0)


@pytest.mark.parametrize("process", [VP(), VPCosine(), SL()], ids=["vp", "vp_cosine", "sl"])
def test_default_prior_is_the_equilibrium(process: ForwardProcess) -> None:
    assert process.prior_variance() == pytest.approx(process.equilibrium_variance(), rel=1e-3)
    y = torch.randn(5, 2, dtype=torch.float64)
    s = torch.full((5,), process.t_max, dtype=torch.float64)
    torch.testing.assert_close(process.prior_log_prob(y), process.equilibrium_log_prob(y, s),
                               rtol=2e-3, atol=2e-3)
