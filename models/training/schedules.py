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


WARMUP_MAX_SHARE = 10
"""The warm-up lasts `warmup_steps`, or a tenth of the run if that is shorter (so a short run
still spends most of its steps at and after the peak learning rate)."""


def effective_warmup(config: _ScheduleConfig, total_steps: int) -> int:
    """Optimizer steps of linear warm-up in a run of `total_steps`: min(warmup_steps, total/10)."""
    if not config.warmup_steps:
        return 0
    return max(1, min(config.warmup_steps, total_steps // WARMUP_MAX_SHARE))


def lr_at(config: _ScheduleConfig, step: int, total_steps: int) -> float:
    """Learning-rate multiplier for optimizer step `step` (0-based) of `total_steps`."""
    warmup = effective_warmup(config, total_steps)
    factor = 1.0
    if warmup and step < warmup:
        factor = (step + 1) / warmup
    if config.lr_schedule == "cosine":
        span = max(total_steps - warmup - 1, 1)
        progress = min(max(step - warmup, 0) / span, 1.0)
        floor = config.lr_final_fraction
        factor *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor
