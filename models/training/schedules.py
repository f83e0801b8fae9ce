"""The learning-rate schedule of training: linear warm-up, then constant or cosine."""

from __future__ import annotations

import math
from typing import Protocol


class _ScheduleConfig(Protocol):
    @property
    def lr_schedule(self) -> str: ...
    @property
    def lr_final_fraction(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...


def lr_at(config: _ScheduleConfig, step: int, total_steps: int) -> float:
    """Learning-rate multiplier for optimizer step `step` (0-based) of `total_steps`."""
    factor = 1.0
    if config.warmup_steps and step < config.warmup_steps:
        factor = (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        span = max(total_steps - config.warmup_steps - 1, 1)
        progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
        floor = config.lr_final_fraction
        factor *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor
