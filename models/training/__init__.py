"""Entropy-matching training (docs/math.md §2.2).

- `loop`: the training loop (`train`), its config and result, and the loss;
- `hooks`: what the loop reports and asks while it runs (`TrainingHooks`, `NoHooks`, `ProgressEvent`);
- `state`: the resumable training state (safetensors + JSON);
- `schedules`: the learning-rate schedule;
- `cpu`: the CPU allocator setting applied before training on the CPU.
"""

from models.training.hooks import NoHooks, ProgressEvent, TrainingHooks
from models.training.loop import (
    TrainingCanceled,
    TrainingConfig,
    TrainingResult,
    entropy_matching_loss,
    loss_weight,
    train,
)
from models.training.state import TrainingState, TrainingStateError

__all__ = [
    "NoHooks",
    "ProgressEvent",
    "TrainingCanceled",
    "TrainingConfig",
    "TrainingHooks",
    "TrainingResult",
    "TrainingState",
    "TrainingStateError",
    "entropy_matching_loss",
    "loss_weight",
    "train",
]
