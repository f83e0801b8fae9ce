"""What the training loop reports and asks while it runs: `ProgressEvent`s and the `TrainingHooks`
it calls (`NoHooks` does nothing; subclass it and override what you need)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from torch import nn

from models.training.state import TrainingState


@dataclass(frozen=True)
class ProgressEvent:
    """A progress report: position, mean loss since the last report, and throughput."""

    epoch: int  # the epoch in progress, 1-based
    epochs: int  # epochs in the run
    step: int  # completed steps of this epoch
    steps_per_epoch: int
    loss: float  # mean per-throw loss since the previous report
    samples_per_second: float  # data points per second since the previous report
    throws_per_second: float  # (x0, s, z) throws per second (samples x num_steps)
    global_step: int  # completed optimizer steps in all

    @property
    def fraction(self) -> float:
        """Fraction of the run done, in [0, 1]."""
        return ((self.epoch - 1) * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


class TrainingHooks(Protocol):
    """What the training loop calls back; implement it (or subclass `NoHooks`) to follow a run."""

    # The loop only reads these two, so they are read-only here: a plain attribute or class attribute
    # of type int or None satisfies them (a writable `int | None` member would reject `x = 1`).
    @property
    def progress_every(self) -> int | None:
        """Optimizer steps between progress events; None: about once a second."""
        ...

    @property
    def checkpoint_every(self) -> int | None:
        """Epochs between on_checkpoint calls besides milestones; None: milestones only."""
        ...

    def on_progress(self, event: ProgressEvent) -> None:
        """Every `progress_every` steps and at the end of each epoch."""
        ...

    def on_milestone(self, epoch: int, network: nn.Module, state: TrainingState) -> None:
        """After each epoch in `TrainingConfig.milestones`, with the EMA network when one is kept
        (else the live one), in eval mode; do not modify it."""
        ...

    def on_checkpoint(self, state: TrainingState) -> None:
        """After milestones and every `checkpoint_every` epochs: a state to resume from."""
        ...

    def should_stop(self) -> bool:
        """Asked before every optimizer step; True stops the run with `TrainingCanceled(state)`."""
        ...

    def on_epoch_end(self, epoch: int, network: nn.Module) -> bool:
        """After every epoch (after its milestone and checkpoint calls), with the network to
        evaluate (the EMA when kept, else the live one; eval mode; do not modify it). True ends
        the run there as finished: `train` returns with `epoch` epochs done."""
        ...


class NoHooks:
    """`TrainingHooks` that do nothing: subclass it and override what you need."""

    progress_every: int | None = None
    checkpoint_every: int | None = None

    def on_progress(self, event: ProgressEvent) -> None:
        return None

    def on_milestone(self, epoch: int, network: nn.Module, state: TrainingState) -> None:
        return None

    def on_checkpoint(self, state: TrainingState) -> None:
        return None

    def state_due(self) -> bool:
        """Optional (the loop looks it up): asked after every step inside an epoch; True makes
        the loop call on_checkpoint with the mid-epoch state (e.g. every few minutes)."""
        return False

    def should_stop(self) -> bool:
        return False

    def on_epoch_end(self, epoch: int, network: nn.Module) -> bool:
        return False
