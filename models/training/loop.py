"""Entropy-matching training (docs/math.md §2.2): Adam on  L = E lambda(s) || Sigma(s) score(y, s) + z ||^2.

Each optimizer step takes `batch_size` data points and expands each into `num_steps` throws
(x0, s, z), s ~ U(t_min, t_max), z ~ N(0, I), y = mu(s) x0 + Sigma(s) z.  Randomness: the data order
of epoch e comes from a generator seeded by (seed, e) and the throws of every chunk of steps from one
seeded by (seed, e, chunk) on the training device, so a run can stop after any step and resume from
its `TrainingState` bit for bit (on CPU; CUDA kernels may be non-deterministic).  Throws are drawn a
chunk (up to ~32 MB) at a time and perturbed in one pass; the per-step work is the network.
The caller follows a run through one `TrainingHooks` object (`models.training.hooks`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from torch import nn

from models.parametrization import EntropyMatchingModel, Parametrization, affine_residual
from models.processes import ForwardProcess
from models.tensors import append_dims, squared_norm
from models.training.cpu import tune_cpu_allocator
from models.training.hooks import ProgressEvent, TrainingHooks
from models.training.schedules import lr_at
from models.training.state import TrainingState, load_optimizer_state, optimizer_state
from models.training.times import TimeSampler

_R = TypeVar("_R")
Weighting = Literal["unit", "likelihood"]
LrSchedule = Literal["constant", "cosine"]
CHUNK_BYTES = 32 * 2**20  # throws drawn at once: about this many bytes of y and z


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings; defaults are the paper's mixture runs (docs/math.md §5)."""

    epochs: int = 100  # passes over the training set
    batch_size: int = 40  # data points per optimizer step (the last batch may be smaller)
    lr: float = 1e-4  # Adam learning rate (the peak when a schedule is used)
    num_steps: int = 10  # (s, z) throws per data point per step (paper: 10 mixtures, 1 images)
    seed: int = 0  # data order and throws (the network's initial weights have their own seed)
    weighting: Weighting = "unit"  # lambda(s) = 1, or sigma^2 / (2 Sigma^2) (maximum likelihood)
    grad_clip: float | None = None  # clip the global gradient norm to this; None: no clipping
    ema_decay: float | None = None  # keep an EMA of the weights (e.g. 0.999); milestones get it
    ema_warmup: bool = True  # EMA decay min(ema_decay, (1 + n) / (10 + n)) at step n: no init bias
    milestones: tuple[int, ...] = ()  # completed epochs at which hooks.on_milestone gets the model
    lr_schedule: LrSchedule = "constant"  # "cosine": lr -> lr * lr_final_fraction by the last step
    lr_final_fraction: float = 0.0  # end of the cosine schedule, as a fraction of lr
    warmup_steps: int = 0  # linear learning-rate warm-up over this many steps
    drop_last: bool = False  # drop the last partial batch of each epoch (the paper keeps it)
    t_min: float | None = None  # smallest s drawn (default: the process's t_min)
    t_max: float | None = None  # largest s drawn (default: the process's t_max)
    log_snr_share: float = 0.0  # share of times drawn uniformly in log-SNR, the rest in s (times.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.epochs < 1 or self.batch_size < 1 or self.num_steps < 1:
            raise ValueError("epochs, batch_size and num_steps must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weighting not in get_args(Weighting):
            raise ValueError(f"weighting must be one of {get_args(Weighting)}, got {self.weighting!r}")
        if self.lr_schedule not in get_args(LrSchedule):
            raise ValueError(f"lr_schedule must be one of {get_args(LrSchedule)}, got {self.lr_schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(
            not 1 <= m <= self.epochs for m in self.milestones
        ):
            raise ValueError(f"milestones must be increasing epochs in [1, {self.epochs}], got {self.milestones}")
        if not 0.0 <= self.log_snr_share <= 1.0:
            raise ValueError(f"log_snr_share must lie in [0, 1], got {self.log_snr_share}")
        if not 0.0 <= self.lr_final_fraction <= 1.0 or self.warmup_steps < 0:
            raise ValueError("lr_final_fraction must lie in [0, 1] and warmup_steps be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown training settings: {unknown}")
        params: dict[str, Any] = dict(d)
        if "milestones" in params:
            params["milestones"] = tuple(params["milestones"])
        return cls(**params)


# Settings that may differ between a run and its resumption (the rest shape the trajectory).
_RESUMABLE_CHANGES = {"epochs", "milestones"}


class TrainingCanceled(Exception):  # noqa: N818 (a status, not an error)
    """hooks.should_stop() said stop; `.state` resumes the run from where it stopped."""

    def __init__(self, state: TrainingState) -> None:
        super().__init__(f"training canceled at epoch {state.epoch}, step {state.step}")
        self.state = state


@dataclass
class TrainingResult:
    """A finished run: the trained network (live weights), its EMA copy, and the final state."""

    network: nn.Module
    ema_network: nn.Module | None
    state: TrainingState
    losses: list[float]  # mean loss per epoch
    seconds: float  # wall time of this call
    throws_per_second: float  # (x0, s, z) throws per second in this call

    @property
    def eval_network(self) -> nn.Module:
        """The weights to measure: the EMA when kept, else the live ones."""
        return self.ema_network if self.ema_network is not None else self.network


def loss_weight(process: ForwardProcess, s: torch.Tensor, weighting: Weighting) -> torch.Tensor:
    """lambda(s), shape (B,): 1, or sigma(s)^2 / (2 Sigma(s)^2) for maximum likelihood."""
    if weighting == "unit":
        return torch.ones_like(s)
    return 0.5 * process.diffusion_squared(s) / process.variance(s)


def entropy_matching_loss(
    e_theta: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    process: ForwardProcess,
    x0: torch.Tensor,
    s: torch.Tensor,
    z: torch.Tensor,
    weighting: Weighting = "unit",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """docs/math.md §2.2: mean over throws of lambda(s) ||(grad log p_eq(y, s) + e_theta(y, s)) Sigma(s) + z||^2.

    x0, z: (B, ...); s: (B,); y = mu(s) x0 + Sigma(s) z. Returns a scalar (nats-free, per throw).
    """
    y = process.perturb(x0, s, z)
    std = append_dims(process.std(s), y.ndim)
    residual = (process.equilibrium_score(y, s) + e_theta(y, s, labels)) * std + z
    return (loss_weight(process, s, weighting) * squared_norm(residual)).mean()


def _seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


_ORDER, _THROWS, _DROPOUT = 0, 1, 2  # seed streams


class _Throws:
    """The pre-drawn throws of one chunk of steps: y, s, z, Sigma, lambda, labels, per-step offsets."""

    def __init__(self, trainer: _Trainer, epoch: int, chunk: int, order: torch.Tensor) -> None:
        tr, config, device = trainer, trainer.config, trainer.device
        first, last = chunk * tr.chunk_steps, min((chunk + 1) * tr.chunk_steps, tr.steps_per_epoch)
        idx = order[first * tr.batch : min(last * tr.batch, tr.n_used)].to(device)
        gen = torch.Generator(device=device).manual_seed(_seed(config.seed, _THROWS, epoch, chunk))
        k = config.num_steps
        x0 = tr.x.index_select(0, idx).repeat_interleave(k, dim=0)
        self.labels = None if tr.labels is None else tr.labels.index_select(0, idx).repeat_interleave(k)
        u = torch.rand(x0.shape[0], generator=gen, device=device, dtype=x0.dtype)
        pick = None if config.log_snr_share in (0.0, 1.0) else torch.rand(u.shape, generator=gen, device=device)
        self.s = tr.times(u, pick)
        self.z = torch.randn(x0.shape, generator=gen, device=device, dtype=x0.dtype)
        self.y = tr.process.perturb(x0, self.s, self.z)
        # residual Sigma * score + z = scale * net(y, s) + offset (models.parametrization)
        self.scale, self.offset = affine_residual(tr.process, tr.model.parametrization, self.y, self.s, self.z)
        self.weight = None if config.weighting == "unit" else loss_weight(tr.process, self.s, config.weighting)
        self.first = first
        self.bounds = [min(i * tr.batch, tr.n_used) * k for i in range(first, last + 1)]
        self.bounds = [b - self.bounds[0] for b in self.bounds]

    def step(self, i: int) -> tuple[slice, torch.Tensor | None]:
        a, b = self.bounds[i - self.first], self.bounds[i - self.first + 1]
        return slice(a, b), None if self.labels is None else self.labels[a:b]


class _Trainer:
    """State of one train() call; see `train`."""

    def __init__(
        self,
        network: nn.Module,
        process: ForwardProcess,
        data: Any,
        config: TrainingConfig,
        parametrization: Parametrization,
        device: torch.device,
    ) -> None:
        self.config, self.process, self.device = config, process, device
        self.model = EntropyMatchingModel(network.to(device), process, parametrization).train()
        dtype = next((p.dtype for p in network.parameters() if p.is_floating_point()), torch.float32)
        self.x = data.x.to(device=device, dtype=dtype)
        labels = getattr(data, "labels", None)
        net_config = getattr(network, "config", None)
        if net_config is not None and getattr(net_config, "num_classes", None) is None:
            labels = None  # an unconditional network trains on labelled data without the labels
        self.labels = None if labels is None else labels.to(device)
        n = int(self.x.shape[0])
        if n == 0:
            raise ValueError("cannot train on an empty data set")
        self.batch = min(config.batch_size, n)
        self.steps_per_epoch = n // self.batch if config.drop_last else math.ceil(n / self.batch)
        self.n_used = self.steps_per_epoch * self.batch if config.drop_last else n
        per_step = self.batch * config.num_steps * int(self.x[0].numel()) * 4 * 3
        self.chunk_steps = max(1, min(self.steps_per_epoch, CHUNK_BYTES // per_step))
        lo = process.t_min if config.t_min is None else config.t_min
        hi = process.t_max if config.t_max is None else config.t_max
        process.check_times(torch.tensor([lo, hi], dtype=torch.float64), "training time range")
        if not lo < hi:
            raise ValueError(f"training needs t_min < t_max, got {lo}, {hi}")
        self.times = TimeSampler(process, float(lo), float(hi), config.log_snr_share)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        fused = device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr, fused=fused)
        self.ema = None
        if config.ema_decay is not None:
            self.ema = copy.deepcopy(self.model.network).eval().requires_grad_(False)
        self.has_dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in network.modules())
        self.total_steps = config.epochs * self.steps_per_epoch
        self.epoch = self.step = self.global_step = 0
        self.losses: list[float] = []
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.loss_count = 0
        self.throws_done = 0  # throws trained on in this call

    # ---- state ----
    def state(self, extra: dict[str, Any]) -> TrainingState:
        ema = None if self.ema is None else {k: v.detach().cpu().clone() for k, v in self.ema.state_dict().items()}
        return TrainingState(
            config=self.config.to_dict(),
            epoch=self.epoch,
            step=self.step,
            global_step=self.global_step,
            model={k: v.detach().cpu().clone() for k, v in self.model.network.state_dict().items()},
            optimizer=optimizer_state(self.optimizer),
            ema=ema,
            losses=list(self.losses),
            loss_sum=float(self.loss_sum),
            loss_count=self.loss_count,
            extra=dict(extra),
        )

    def restore(self, state: TrainingState) -> None:
        old = TrainingConfig.from_dict(state.config).to_dict()
        changed = sorted(k for k, v in self.config.to_dict().items() if old[k] != v and k not in _RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"cannot resume: settings differ from the saved run: {changed}")
        if self.config.lr_schedule != "constant" and old["epochs"] != self.config.epochs:
            raise ValueError("cannot resume a scheduled learning rate with a different number of epochs")
        if state.epoch > self.config.epochs:
            raise ValueError(f"the saved run is at epoch {state.epoch}, beyond epochs={self.config.epochs}")
        self.model.network.load_state_dict(state.model)
        load_optimizer_state(self.optimizer, state.optimizer)
        if (self.ema is None) != (state.ema is None):
            raise ValueError("cannot resume: EMA setting differs from the saved run")
        if self.ema is not None and state.ema is not None:
            self.ema.load_state_dict(state.ema)
        self.epoch, self.step, self.global_step = state.epoch, state.step, state.global_step
        self.losses = list(state.losses)
        self.loss_sum.fill_(state.loss_sum)
        self.loss_count = state.loss_count

    # ---- one optimizer step ----
    def train_step(self, throws: _Throws, i: int) -> int:
        sl, labels = throws.step(i)
        if self.has_dropout:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(_seed(self.config.seed, _DROPOUT, self.global_step))
                loss = self._loss(throws, sl, labels)
        else:
            loss = self._loss(throws, sl, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.config.grad_clip, foreach=True)
        lr = self.config.lr * lr_at(self.config, self.global_step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.ema is not None and self.config.ema_decay is not None:
            decay = self.config.ema_decay
            if self.config.ema_warmup:
                decay = min(decay, (1.0 + self.global_step) / (10.0 + self.global_step))
            ema_params: list[torch.Tensor] = list(self.ema.parameters())
            live = [p.detach() for p in self.model.network.parameters()]
            torch._foreach_lerp_(ema_params, live, 1.0 - decay)
        n = sl.stop - sl.start
        self.loss_sum.add_(loss.detach(), alpha=n)  # float64 accumulator
        self.loss_count += n
        self.throws_done += n
        self.step += 1
        self.global_step += 1
        return n

    def _loss(self, throws: _Throws, sl: slice, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.model.network(throws.y[sl], throws.s[sl], labels)
        sq = squared_norm(torch.addcmul(throws.offset[sl], throws.scale[sl], out))
        return (sq if throws.weight is None else sq * throws.weight[sl]).mean()


def train(
    network: nn.Module,
    process: ForwardProcess,
    data: Any,
    config: TrainingConfig,
    *,
    parametrization: Parametrization = "entropy_matching",
    device: torch.device | str = "cpu",
    hooks: TrainingHooks | None = None,
    resume: TrainingState | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainingResult:
    """Train `network` (moved to `device`, updated in place) on `data` (a DataSet: .x (N, ...),
    .labels) by entropy matching, continuing from `resume` when given.

    `hooks` (see `TrainingHooks`): on_progress gets a ProgressEvent every `hooks.progress_every`
    steps (None: about once a second) and at the end of each epoch; on_milestone(epoch, network,
    state) runs after each epoch in config.milestones with the EMA network when kept (eval mode;
    do not modify it); on_checkpoint(state) runs after milestones and every
    `hooks.checkpoint_every` epochs, and after any step inside an epoch at which the optional
    hooks.state_due() says True (e.g. a wall-clock interval; the state then resumes mid-epoch).
    should_stop() is asked before every step; when it says True,
    TrainingCanceled(state) is raised. `extra` is stored in every state (e.g. network config and
    process spec).
    """
    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu_allocator()
    extra = extra or {}
    tr = _Trainer(network, process, data, config, parametrization, device)
    if resume is not None:
        tr.restore(resume)
    state_due: Callable[[], bool] | None = getattr(hooks, "state_due", None)
    start = time.perf_counter()
    last_report, report_time, report_loss, report_count = tr.global_step, start, 0.0, 0
    while tr.epoch < config.epochs:
        order = torch.randperm(len(tr.x), generator=torch.Generator().manual_seed(_seed(config.seed, _ORDER, tr.epoch)))
        throws: _Throws | None = None
        while tr.step < tr.steps_per_epoch:
            if hooks is not None and hooks.should_stop():
                raise TrainingCanceled(tr.state(extra))
            chunk = tr.step // tr.chunk_steps
            if throws is None or throws.first != chunk * tr.chunk_steps:
                throws = _Throws(tr, tr.epoch, chunk, order)
            tr.train_step(throws, tr.step)
            if hooks is None:
                continue
            if state_due is not None and tr.step < tr.steps_per_epoch and state_due():
                hooks.on_checkpoint(tr.state(extra))
            now = time.perf_counter()
            every = hooks.progress_every
            due = (tr.global_step - last_report >= every) if every else now - report_time >= 1.0
            if due or tr.step == tr.steps_per_epoch:
                total = float(tr.loss_sum)
                rate = (tr.global_step - last_report) * tr.batch / max(now - report_time, 1e-9)
                event = ProgressEvent(
                    epoch=tr.epoch + 1,
                    epochs=config.epochs,
                    step=tr.step,
                    steps_per_epoch=tr.steps_per_epoch,
                    loss=(total - report_loss) / max(tr.loss_count - report_count, 1),
                    samples_per_second=rate,
                    throws_per_second=rate * config.num_steps,
                    global_step=tr.global_step,
                )
                hooks.on_progress(event)
                last_report, report_time, report_loss, report_count = tr.global_step, now, total, tr.loss_count
        tr.losses.append(float(tr.loss_sum) / max(tr.loss_count, 1))
        tr.epoch, tr.step = tr.epoch + 1, 0
        tr.loss_sum.zero_()
        tr.loss_count = report_count = 0
        report_loss = 0.0
        if hooks is not None:
            _after_epoch(tr, config, extra, hooks)
            if _with_eval_network(tr, lambda net: hooks.on_epoch_end(tr.epoch, net)):
                break
    seconds = time.perf_counter() - start
    return TrainingResult(
        tr.model.network, tr.ema, tr.state(extra), list(tr.losses), seconds, tr.throws_done / max(seconds, 1e-9)
    )


def _with_eval_network(tr: _Trainer, call: Callable[[nn.Module], _R]) -> _R:
    """`call(network)` with the network to evaluate (the EMA when kept) in eval mode."""
    net = tr.ema if tr.ema is not None else tr.model.network
    net.eval()
    try:
        return call(net)
    finally:
        if tr.ema is None:
            net.train()


def _after_epoch(tr: _Trainer, config: TrainingConfig, extra: dict[str, Any], hooks: TrainingHooks) -> None:
    """The milestone and checkpoint calls after epoch `tr.epoch` (just completed)."""
    milestone = tr.epoch in config.milestones
    periodic = hooks.checkpoint_every is not None and tr.epoch % hooks.checkpoint_every == 0
    if not (milestone or periodic):
        return
    state = tr.state(extra)
    if milestone:
        _with_eval_network(tr, lambda net: hooks.on_milestone(tr.epoch, net, state))
    hooks.on_checkpoint(state)
