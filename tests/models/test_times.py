"""Training times: uniform in s, or uniform in log-SNR (the maximum-likelihood weighting by
importance sampling, docs/math.md §2.4)."""

from __future__ import annotations

import pytest
import torch

from models.processes import SL, VE, VP, ForwardProcess, VPCosine
from models.training.times import TimeSampler

PROCESSES = [VP(), VP(kappa=0.1), VPCosine(), SL(), VE()]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.kind)
def test_likelihood_weight_is_minus_the_log_snr_derivative(process: ForwardProcess) -> None:
    """sigma^2 / Sigma^2 = -d log SNR / ds: the identity that makes log-SNR sampling equal to the
    maximum-likelihood weighting."""
    s = torch.linspace(process.t_min * 10, process.t_max * 0.99, 50, dtype=torch.float64,
                       requires_grad=True)
    (grad,) = torch.autograd.grad(process.log_snr(s).sum(), s)
    weight = process.diffusion_squared(s) / process.variance(s)
    torch.testing.assert_close(-grad, weight.detach(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.kind)
def test_log_snr_times_are_uniform_in_log_snr(process: ForwardProcess) -> None:
    lo, hi = process.t_min, process.t_max
    sampler = TimeSampler(process, lo, hi, log_snr_share=1.0)
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = sampler(u)
    assert float(s.min()) >= lo and float(s.max()) <= hi
    ends = process.log_snr(torch.tensor([lo, hi], dtype=torch.float64))
    v = ((process.log_snr(s) - ends[0]) / (ends[1] - ends[0])).sort().values
    ecdf = torch.arange(1, len(v) + 1, dtype=torch.float64) / len(v)
    assert float((v - ecdf).abs().max()) < 0.01  # Kolmogorov distance to U(0, 1)


def test_share_zero_is_uniform_in_s_and_a_share_mixes() -> None:
    process = VP()
    u = torch.rand(100_000, generator=torch.Generator().manual_seed(1))
    plain = TimeSampler(process, 1e-5, 1.0, log_snr_share=0.0)
    torch.testing.assert_close(plain(u), 1e-5 + (1.0 - 1e-5) * u)
    half = TimeSampler(process, 1e-5, 1.0, log_snr_share=0.5)
    pick = torch.rand(100_000, generator=torch.Generator().manual_seed(2))
    s = half(u, pick)
    below = float((s < 0.01).double().mean())
    # uniform puts 1 % of the times below s = 0.01, log-SNR about 40 %: the mixture about half of both
    log_snr_share = float((TimeSampler(process, 1e-5, 1.0, 1.0)(u) < 0.01).double().mean())
    assert below == pytest.approx(0.5 * 0.01 + 0.5 * log_snr_share, abs=0.01)


def test_share_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="log_snr_share"):
        TimeSampler(VP(), 1e-5, 1.0, log_snr_share=1.5)
