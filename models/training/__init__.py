"""Entropy-matching training (docs/math.md §2).

- `loop`: the training loop (`train`), its config and result, and the loss;
- `state`: the resumable training state (safetensors + JSON);
- `schedules`: learning-rate schedules and progress events.
"""

from models.training.loop import (
    TrainingCanceled,
    TrainingConfig,
    TrainingResult,
    entropy_matching_loss,
    loss_weight,
    train,
)
from models.training.schedules import ProgressEvent
from models.training.state import TrainingState, TrainingStateError

__all__ = [
    "ProgressEvent",
    "TrainingCanceled",
    "TrainingConfig",
    "TrainingResult",
    "TrainingState",
    "TrainingStateError",
    "entropy_matching_loss",
    "loss_weight",
    "train",
]
