"""models.training: the loss against a hand computation, resume bit for bit, EMA, clipping,
milestones, cancellation, schedules and the saved state."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from models.data import DataSet
from models.networks import MLPConfig, UNetConfig, build_network
from models.processes import VE, VP
from models.training.hooks import NoHooks, ProgressEvent
from models.training.loop import (
    TrainingCanceled,
    TrainingConfig,
    _Throws,
    _Trainer,
    entropy_matching_loss,
    loss_weight,
    train,
)
from models.training.schedules import lr_at
from models.training.state import TrainingState, TrainingStateError

TINY = {"fourier_features": 8, "width": 16, "hidden_widths": (16, 8)}


class StopAt(NoHooks):
    """should_stop() says True from its n-th call on, i.e. after n - 1 steps."""

    def __init__(self, n: int) -> None:
        self.asked, self.n = 0, n

    def should_stop(self) -> bool:
        self.asked += 1
        return self.asked >= self.n


class Recorder(NoHooks):
    """Records every call: progress events, (epoch, state epoch, training flag) per milestone,
    and the epochs of checkpoints."""

    def __init__(self, progress_every: int | None = None, checkpoint_every: int | None = None) -> None:
        self.progress_every, self.checkpoint_every = progress_every, checkpoint_every
        self.events: list[ProgressEvent] = []
        self.milestones: list[tuple[int, int, bool]] = []
        self.checkpoints: list[int] = []

    def on_progress(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def on_milestone(self, epoch: int, network: torch.nn.Module, state: TrainingState) -> None:
        self.milestones.append((epoch, state.epoch, network.training))

    def on_checkpoint(self, state: TrainingState) -> None:
        self.checkpoints.append(state.epoch)


def tiny_net(seed: int = 0, dim: int = 2) -> torch.nn.Module:
    return build_network(MLPConfig(dim=dim, seed=seed, **TINY))


def blob_data(n: int = 48, dim: int = 2) -> DataSet:
    g = torch.Generator().manual_seed(7)
    return DataSet(torch.randn(n, dim, generator=g) * 0.5 + 1.0)


def test_loss_equals_hand_computation() -> None:
    """docs/math.md §2.2 by hand (numpy, VP closed forms) for both weightings."""
    beta_min, beta_max = 0.1, 16.0
    x0 = np.array([[1.0, -2.0], [0.5, 0.25], [3.0, 0.0]])
    z = np.array([[0.3, -0.1], [-1.2, 0.4], [0.0, 2.0]])
    s = np.array([0.05, 0.5, 0.9])
    e = np.array([[0.2, 0.1], [-0.3, 0.0], [1.0, -1.0]])  # a fixed "network output"
    mu = np.exp(-0.5 * beta_min * s - 0.25 * (beta_max - beta_min) * s**2)
    var = 1.0 - mu**2
    y = mu[:, None] * x0 + np.sqrt(var)[:, None] * z
    residual = (-y + e) * np.sqrt(var)[:, None] + z  # grad log p_eq = -y for kappa = 1
    per_throw = (residual**2).sum(axis=1)
    lam = 0.5 * (beta_min + (beta_max - beta_min) * s) / var
    e_fn = lambda yy, ss, lab: torch.tensor(e)  # noqa: E731
    t = lambda a: torch.tensor(a)  # noqa: E731
    unit = entropy_matching_loss(e_fn, VP(), t(x0), t(s), t(z), "unit")
    likelihood = entropy_matching_loss(e_fn, VP(), t(x0), t(s), t(z), "likelihood")
    assert float(unit) == pytest.approx(per_throw.mean(), rel=1e-12)
    assert float(likelihood) == pytest.approx((lam * per_throw).mean(), rel=1e-12)


def test_likelihood_weight_is_sigma2_over_two_var() -> None:
    s = torch.tensor([0.01, 0.5], dtype=torch.float64)
    p = VE()
    expected = p.diffusion_squared(s) / (2 * p.variance(s))
    torch.testing.assert_close(loss_weight(p, s, "likelihood"), expected)
    assert torch.equal(loss_weight(p, s, "unit"), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("parametrization", ["entropy_matching", "score", "noise"])
def test_training_step_loss_is_the_entropy_matching_loss(parametrization: str) -> None:
    """The trainer's pre-drawn throws and affine residual give exactly the loss of docs/math.md §2.2."""
    process = VP()
    config = TrainingConfig(epochs=1, batch_size=8, num_steps=3, weighting="likelihood")
    tr = _Trainer(tiny_net(), process, blob_data(20), config, parametrization, torch.device("cpu"))  # type: ignore[arg-type]
    order = torch.arange(20)
    throws = _Throws(tr, 0, 0, order)
    sl, labels = throws.step(1)
    assert (sl.start, sl.stop) == (24, 48)  # points 8..15, three throws each
    x0 = tr.x[8:16].repeat_interleave(3, dim=0)
    s, z = throws.s[sl], throws.z[sl]
    assert torch.equal(throws.y[sl], process.perturb(x0, s, z))
    expected = entropy_matching_loss(tr.model.e_theta, process, x0, s, z, "likelihood")
    torch.testing.assert_close(tr._loss(throws, sl, labels), expected, rtol=2e-5, atol=0)
    assert throws.step(2)[0] == slice(48, 60)  # the last, partial batch: points 16..19


@pytest.mark.parametrize("log_snr_share", [0.0, 0.5])
def test_resumed_run_equals_uninterrupted_run_bit_for_bit(log_snr_share: float) -> None:
    data, process = blob_data(), VP()
    config = TrainingConfig(
        log_snr_share=log_snr_share,
        epochs=3,
        batch_size=8,
        num_steps=4,
        seed=5,
        ema_decay=0.9,
        grad_clip=0.5,
        lr=1e-3,
        lr_schedule="cosine",
        warmup_steps=3,
    )
    full = train(tiny_net(), process, data, config)
    with pytest.raises(TrainingCanceled) as info:  # 9 steps done: epoch 2, step 3 of 6
        train(tiny_net(), process, data, config, hooks=StopAt(10))
    saved = info.value.state
    assert (saved.epoch, saved.step, saved.global_step) == (1, 3, 9)
    state = TrainingState.from_bytes(saved.to_bytes())
    resumed = train(tiny_net(seed=99), process, data, config, resume=state)  # other init: overwritten
    for key, value in full.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key
    assert full.ema_network is not None and resumed.ema_network is not None
    for key, value in full.ema_network.state_dict().items():
        assert torch.equal(value, resumed.ema_network.state_dict()[key]), key
    for index, entry in full.state.optimizer.items():
        for key, value in entry.items():
            assert torch.equal(value, resumed.state.optimizer[index][key])
    assert full.losses == resumed.losses


def test_resume_refuses_changed_settings() -> None:
    data, process = blob_data(16), VP()
    config = TrainingConfig(epochs=1, batch_size=8, num_steps=2)
    state = train(tiny_net(), process, data, config).state
    with pytest.raises(ValueError, match="lr"):
        train(tiny_net(), process, data, TrainingConfig(epochs=2, batch_size=8, num_steps=2, lr=1e-3), resume=state)
    longer = train(tiny_net(), process, data, TrainingConfig(epochs=2, batch_size=8, num_steps=2), resume=state)
    assert longer.state.epoch == 2 and len(longer.losses) == 2


def test_milestones_get_the_model_after_those_epochs() -> None:
    config = TrainingConfig(epochs=4, batch_size=16, num_steps=1, milestones=(1, 3), ema_decay=0.5)
    hooks = Recorder()
    result = train(tiny_net(), VP(), blob_data(), config, hooks=hooks)
    assert hooks.milestones == [(1, 1, False), (3, 3, False)]
    assert hooks.checkpoints == [1, 3]
    assert result.eval_network is result.ema_network


def test_checkpoints_come_every_checkpoint_every_epochs_and_at_milestones() -> None:
    config = TrainingConfig(epochs=5, batch_size=16, num_steps=1, milestones=(3,))
    net = tiny_net()
    hooks = Recorder(checkpoint_every=2)
    train(net, VP(), blob_data(), config, hooks=hooks)
    assert hooks.checkpoints == [2, 3, 4]
    assert hooks.milestones == [(3, 3, False)]  # the live network, in eval mode during the call
    assert net.training  # and back in training mode afterwards


def test_hooks_need_not_subclass_no_hooks() -> None:
    class Plain:  # structurally a TrainingHooks
        progress_every: int | None = 2
        checkpoint_every: int | None = None

        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_progress(self, event: ProgressEvent) -> None:
            self.steps.append(event.global_step)

        def on_milestone(self, epoch: int, network: torch.nn.Module, state: TrainingState) -> None:
            raise AssertionError("no milestones configured")

        def on_checkpoint(self, state: TrainingState) -> None:
            raise AssertionError("no checkpoints configured")

        def should_stop(self) -> bool:
            return False

        def on_epoch_end(self, epoch: int, network: torch.nn.Module) -> bool:
            self.steps.append(-epoch)
            return False

    hooks = Plain()
    train(tiny_net(), VP(), blob_data(48), TrainingConfig(epochs=2, batch_size=8, num_steps=1), hooks=hooks)
    assert hooks.steps == [2, 4, 6, -1, 8, 10, 12, -2]  # every 2 steps; each epoch (6 steps) ends on one


def test_on_epoch_end_can_finish_the_run_early_with_the_ema_network() -> None:
    class StopAfter(NoHooks):
        def __init__(self) -> None:
            self.seen: list[tuple[int, bool]] = []

        def on_epoch_end(self, epoch: int, network: torch.nn.Module) -> bool:
            self.seen.append((epoch, network.training))
            return epoch == 2

    hooks = StopAfter()
    net = tiny_net()
    config = TrainingConfig(epochs=5, batch_size=8, num_steps=1, ema_decay=0.9)
    result = train(net, VP(), blob_data(32), config, hooks=hooks)
    assert hooks.seen == [(1, False), (2, False)]  # the EMA copy, in eval mode, after each epoch
    assert result.state.epoch == 2 and len(result.losses) == 2
    assert result.ema_network is not None and net.training


def test_cancellation_stops_between_steps() -> None:
    with pytest.raises(TrainingCanceled) as info:
        train(tiny_net(), VP(), blob_data(), TrainingConfig(epochs=5, batch_size=8, num_steps=1), hooks=StopAt(5))
    assert info.value.state.global_step == 4 and info.value.state.step == 4


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_is_the_exponential_average_of_the_weights(warmup: bool) -> None:
    net = tiny_net()
    snapshots = [{k: v.clone() for k, v in net.state_dict().items()}]
    config = TrainingConfig(epochs=1, batch_size=16, num_steps=1, ema_decay=0.75, ema_warmup=warmup, lr=1e-2)

    class Snapshots(NoHooks):
        progress_every = 1

        def on_progress(self, event: ProgressEvent) -> None:
            snapshots.append({k: v.clone() for k, v in net.state_dict().items()})

    result = train(net, VP(), blob_data(32), config, hooks=Snapshots())
    assert len(snapshots) == 3  # initial + two steps
    assert result.ema_network is not None
    d1, d2 = (1 / 10, 2 / 11) if warmup else (0.75, 0.75)  # min(decay, (1 + n) / (10 + n)), n = 0, 1
    for key, ema in result.ema_network.state_dict().items():
        p0, p1, p2 = (snap[key] for snap in snapshots)
        expected = d2 * (d1 * p0 + (1 - d1) * p1) + (1 - d2) * p2
        torch.testing.assert_close(ema, expected, rtol=1e-6, atol=1e-7)


def test_gradient_clipping_limits_the_update() -> None:
    """Adam is scale-invariant unless the gradient is far below eps: a clip to 1e-14 freezes it."""

    def max_change(clip: float | None) -> float:
        net = tiny_net()
        before = [p.detach().clone() for p in net.parameters()]
        train(net, VP(), blob_data(16), TrainingConfig(epochs=1, batch_size=16, num_steps=1, lr=1e-2, grad_clip=clip))
        return max(float((p.detach() - b).abs().max()) for p, b in zip(net.parameters(), before, strict=True))

    assert max_change(None) == pytest.approx(1e-2, rel=0.01)  # Adam's first step moves by ~lr
    assert max_change(1e-14) < 1e-6


def test_training_lowers_the_loss_and_reports_progress() -> None:
    hooks = Recorder()
    config = TrainingConfig(epochs=6, batch_size=16, num_steps=4, lr=3e-3)
    result = train(tiny_net(), VP(), blob_data(64), config, hooks=hooks)
    events = hooks.events
    assert result.losses[-1] < result.losses[0]
    assert [e.epoch for e in events if e.step == e.steps_per_epoch] == [1, 2, 3, 4, 5, 6]
    assert events[-1].fraction == 1.0 and events[-1].throws_per_second > 0
    assert math.isfinite(result.throws_per_second) and result.state.global_step == 24


def test_unet_with_labels_trains_by_noise_prediction() -> None:
    g = torch.Generator().manual_seed(0)
    data = DataSet(torch.rand(12, 1, 8, 8, generator=g) * 2 - 1, torch.arange(12) % 3, (-1.0, 1.0))
    net = build_network(UNetConfig(1, 8, base_channels=8, channel_mults=(1, 2), num_classes=3, dropout=0.1))
    config = TrainingConfig(epochs=1, batch_size=6, num_steps=1, seed=1)
    a = train(net, VP(), data, config, parametrization="noise")
    b = train(build_network(net.config), VP(), data, config, parametrization="noise")  # type: ignore[arg-type]
    assert all(math.isfinite(v) for v in a.losses)
    assert a.losses == b.losses  # dropout draws are seeded too


def test_lr_schedule_shapes() -> None:
    cosine = TrainingConfig(lr_schedule="cosine", lr_final_fraction=0.1, warmup_steps=10)
    assert lr_at(cosine, 0, 110) == pytest.approx(0.1)
    assert lr_at(cosine, 9, 110) == pytest.approx(1.0)
    assert lr_at(cosine, 109, 110) == pytest.approx(0.1)
    assert lr_at(TrainingConfig(), 1000, 5) == 1.0


def test_warmup_is_at_most_a_tenth_of_a_short_run() -> None:
    config = TrainingConfig(lr_schedule="cosine", lr_final_fraction=0.1, warmup_steps=500)
    # 200 steps: warm-up over 20 steps (not 500, which would never reach the peak), then cosine
    assert lr_at(config, 0, 200) == pytest.approx(1 / 20)
    assert lr_at(config, 19, 200) == pytest.approx(1.0)
    assert lr_at(config, 199, 200) == pytest.approx(0.1)
    assert max(lr_at(config, s, 200) for s in range(200)) == pytest.approx(1.0)
    # a long run keeps the full 500 steps
    assert lr_at(config, 249, 10_000) == pytest.approx(0.5)
    assert lr_at(config, 499, 10_000) == pytest.approx(1.0)


def test_config_round_trip_and_validation() -> None:
    config = TrainingConfig(epochs=7, milestones=(2, 7), ema_decay=0.99, weighting="likelihood")
    assert TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="milestones"):
        TrainingConfig(epochs=3, milestones=(4,))
    with pytest.raises(ValueError, match="weighting"):
        TrainingConfig(weighting="snr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        TrainingConfig.from_dict({"epochs": 2, "momentum": 0.9})


def test_training_state_refuses_foreign_bytes() -> None:
    with pytest.raises(TrainingStateError):
        TrainingState.from_bytes(pickle.dumps({"model": {}}))
    with pytest.raises(TrainingStateError):
        TrainingState.from_bytes(b"\x00" * 16)


def test_empty_data_and_bad_times_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        train(tiny_net(), VP(), DataSet(torch.zeros(0, 2)), TrainingConfig(epochs=1))
    with pytest.raises(ValueError, match="must lie in"):
        train(tiny_net(), VP(), blob_data(), TrainingConfig(epochs=1, t_max=2.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_runs_on_cuda() -> None:  # pragma: no cover - no GPU in CI
    result = train(tiny_net(), VP(), blob_data(), TrainingConfig(epochs=1, batch_size=8), device="cuda")
    assert next(result.network.parameters()).is_cuda and math.isfinite(result.losses[0])


@pytest.mark.slow
def test_paper_mlp_learns_the_paper_mixture_to_within_ten_percent() -> None:
    """The paper's protocol (docs/math.md §5): 8192 draws, VP, batch 40, lr 1e-4, num_steps 10; after 10
    epochs S_NN on held-out draws is within 10 % of the exact S_tot (observed ratio ~1.04)."""
    from models.data import GaussianMixture
    from models.entropy.estimators import MeasurementConfig, neural_entropy, total_entropy_mixture_exact
    from models.parametrization import EntropyMatchingModel

    mixture, process = GaussianMixture.paper(seed=0), VP()
    result = train(
        build_network(MLPConfig(dim=2)), process, mixture.as_dataset(8192, seed=0), TrainingConfig(epochs=10)
    )
    model = EntropyMatchingModel(result.network, process)
    held_out = mixture.sample(65536, torch.Generator().manual_seed(10_000))
    with torch.inference_mode():
        s_nn = neural_entropy(model.e_theta, process, held_out, MeasurementConfig(n_samples=65536, seed=1))
    s_tot = total_entropy_mixture_exact(mixture, process)
    assert abs(s_nn.total.mean / s_tot - 1.0) < 0.10
