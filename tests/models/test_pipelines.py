"""Diffusers pipelines read as our models: the scheduler tables as a process (DiscreteVP), the
prediction-type adapter against closed-form truth, and the UNet wrapper against diffusers itself."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from models.entropy.closed_forms import total_entropy_gaussian
from models.entropy.estimators import MeasurementConfig, neural_entropy
from models.parametrization import EntropyMatchingModel, affine_residual
from models.pipelines import adapter
from models.pipelines.config import DEFAULTS, DiffusersUNetConfig
from models.processes import DiscreteVP, process_from_spec
from tests.pipelines import TINY_UNET, tiny_unet

SCHEDULES = [("linear", 0.0001, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 0.0001, 0.02)]


# ---- the scheduler as a process ----
@pytest.mark.parametrize(("schedule", "start", "end"), SCHEDULES)
def test_process_equals_the_scheduler_table_at_every_training_step(schedule: str, start: float, end: float) -> None:
    from diffusers import DDPMScheduler

    n = 1000
    table = DDPMScheduler(num_train_timesteps=n, beta_schedule=schedule, beta_start=start,
                          beta_end=end).alphas_cumprod.to(torch.float64)
    process = DiscreteVP(schedule, start, end, n)
    s = (torch.arange(n, dtype=torch.float64) + 1) / n
    assert torch.equal(process.alphas_cumprod(), table.to(torch.float64)) or torch.allclose(
        process.alphas_cumprod(), table, rtol=1e-15, atol=1e-15)
    assert torch.allclose(process.mean_scale(s) ** 2, table, rtol=1e-12, atol=1e-15)
    assert torch.allclose(process.variance(s), 1 - table, rtol=1e-12, atol=1e-15)
    assert (process.t_min, process.t_max) == (1 / n, 1.0)
    assert torch.allclose(process.model_timestep(s), torch.arange(n, dtype=torch.float64))


@pytest.mark.parametrize(("schedule", "start", "end"), SCHEDULES)
def test_drift_rate_is_the_derivative_of_the_same_table(schedule: str, start: float, end: float) -> None:
    """a(s) = -d ln mu / ds inside every segment (central differences away from the nodes), the
    log-SNR is linear in s between nodes, and sigma^2 = 2 a (kappa = 1)."""
    process = DiscreteVP(schedule, start, end, 200)
    s = (torch.arange(1, 199, dtype=torch.float64) + 1.37) / 200  # strictly inside segments
    h = 1e-7
    numeric = -(process.log_mean_scale(s + h) - process.log_mean_scale(s - h)) / (2 * h)
    assert torch.allclose(process.drift_rate(s), numeric, rtol=1e-5)
    assert torch.allclose(process.diffusion_squared(s), 2 * process.drift_rate(s))
    k = torch.arange(1, 199)
    lam = process.log_snr(s)
    nodes = process.log_snr((k.to(torch.float64) + 1) / 200)
    after = process.log_snr((k.to(torch.float64) + 2) / 200)
    assert torch.allclose(lam, nodes + 0.37 * (after - nodes))


def test_spec_round_trips_and_bad_specs_are_refused() -> None:
    p = DiscreteVP("scaled_linear", 0.00085, 0.012, 1000)
    assert process_from_spec(p.spec()).spec() == p.spec()
    with pytest.raises(ValueError, match="beta_schedule"):
        DiscreteVP("sigmoid")
    with pytest.raises(ValueError):
        DiscreteVP("linear", 0.0001, 1.5)


# ---- the adapter: every prediction type against closed-form truth ----
MEAN = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
STD = torch.tensor([0.3, 1.0, 0.1, 0.6], dtype=torch.float64)


class GaussianPredictor(nn.Module):
    """The exact prediction of each type for data N(MEAN, diag(STD^2)) under `process`:
    x0_hat = m + mu v / (mu^2 v + Sigma^2) (y - mu m), eps_hat = (y - mu x0_hat) / Sigma,
    v_hat = mu eps_hat - Sigma x0_hat (written here independently of the adapter)."""

    def __init__(self, process: DiscreteVP, kind: str) -> None:
        super().__init__()
        self.process, self.kind = process, kind

    def forward(self, y: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        mu = self.process.mean_scale(s).to(y.dtype)[:, None]
        sd = self.process.std(s).to(y.dtype)[:, None]
        m, v = MEAN.to(y.dtype), (STD**2).to(y.dtype)
        x0 = m + mu * v / (mu**2 * v + sd**2) * (y - mu * m)
        eps = (y - mu * x0) / sd
        return {"noise": eps, "sample": x0, "v_prediction": mu * eps - sd * x0,
                "score": -eps / sd}[self.kind]


@pytest.mark.parametrize("kind", ["noise", "v_prediction", "sample"])
def test_analytic_predictors_give_the_closed_form_total_entropy(kind: str) -> None:
    """S_NN of the exact predictor, read through the adapter, equals S_tot of the tabulated process
    (closed form for Gaussian data) within 3 standard errors. Plain Monte Carlo (no control
    variates), so the standard error is an honest one; with the Gaussian-fit control variate the
    estimate of this linear e_theta is exact up to quadrature, checked to 1e-4 relative."""
    process = DiscreteVP("linear", 0.0001, 0.02, 1000)
    model = EntropyMatchingModel(GaussianPredictor(process, kind), process, kind)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    pool = (MEAN + STD * torch.randn(200_000, 4, generator=gen, dtype=torch.float64)).to(torch.float32)
    exact = total_entropy_gaussian(MEAN, STD, process, t_start=process.t_min)
    plain = neural_entropy(model.e_theta, process, pool,
                           MeasurementConfig(n_times=33, n_samples=16_384, seed=3, control_variates=False))
    assert abs(plain.total.mean - exact) <= 3 * plain.total.stderr, (plain.total, exact)
    assert plain.total.stderr < 0.02 * exact
    fitted = neural_entropy(model.e_theta, process, pool, MeasurementConfig(n_times=33, n_samples=4096, seed=3))
    assert abs(fitted.total.mean - exact) < 1e-4 * exact, (fitted.total, exact)


def test_every_prediction_type_gives_the_same_score_and_e_theta() -> None:
    process = DiscreteVP("squaredcos_cap_v2", 0.0001, 0.02, 1000)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(64, 4, generator=gen, dtype=torch.float64)
    s = torch.rand(64, generator=gen, dtype=torch.float64) * (1 - 1e-3) + 1e-3
    outs = {k: GaussianPredictor(process, k)(y, s) for k in adapter.PREDICTION_TYPES}
    mu, sd = adapter.coefficients(process, s, 2)
    truth = outs["score"]
    for kind, out in outs.items():
        assert torch.allclose(adapter.score(kind, out, y, mu, sd), truth, rtol=1e-9, atol=1e-9), kind
        assert torch.allclose(adapter.scaled_score(kind, out, y, mu, sd), sd * truth, rtol=1e-9, atol=1e-9)
        assert torch.allclose(adapter.e_theta(kind, out, y, s, process), truth + y, rtol=1e-9, atol=1e-9)
        z = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        scale, offset = affine_residual(process, kind, y, s, z)  # type: ignore[arg-type]
        assert torch.allclose(scale * out + offset, sd * truth + z, rtol=1e-9, atol=1e-9), kind
    with pytest.raises(ValueError, match="prediction type"):
        adapter.score("epsilon", y, y, mu, sd)


# ---- the UNet wrapper ----
def test_defaults_are_diffusers_own() -> None:
    from diffusers import UNet2DModel

    sig = inspect.signature(UNet2DModel.__init__)
    expected = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()} == DEFAULTS


@pytest.mark.parametrize("timestep_input", ["float", "round"])
def test_wrapper_feeds_s_T_minus_one_to_the_unet(timestep_input: str) -> None:
    from models.pipelines.unet2d import build_unet

    unet = tiny_unet(num_class_embeds=3)
    cfg = DiffusersUNetConfig({**TINY_UNET, "num_class_embeds": 3}, 1000, timestep_input)
    net = build_unet(cfg)
    net.load_state_dict(unet.state_dict())
    y = torch.randn(4, 1, 8, 8)
    s = torch.tensor([0.001, 0.2503, 0.5, 1.0])
    labels = torch.tensor([0, 1, 2, 0])
    t = s * 1000 - 1
    if timestep_input == "round":
        t = torch.round(t)
    with torch.no_grad():
        assert torch.allclose(net(y, s, labels), unet(y, t, class_labels=labels).sample, atol=1e-6)
    assert cfg.shape == (1, 8, 8) and cfg.num_classes == 3
    assert DiffusersUNetConfig.from_dict(cfg.to_dict()) == cfg
    assert math.isclose(float(net.timestep(torch.tensor([0.2503]))), 249.3 if timestep_input == "float" else 249.0,
                        rel_tol=1e-6)
