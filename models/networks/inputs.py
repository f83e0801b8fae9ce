"""Input validation shared by every network: clear errors instead of shape mismatches deep inside."""

from __future__ import annotations

import torch


class NetworkInputError(ValueError):
    """The input given to a network has the wrong shape for its configuration."""


def check_inputs(
    x: torch.Tensor,
    s: torch.Tensor | float,
    event_shape: tuple[int, ...],
    labels: torch.Tensor | None,
    num_classes: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (x (B, *event_shape), s (B,) or scalar, labels (B,) | None); returns x and s (B,)."""
    if x.ndim != len(event_shape) + 1 or tuple(x.shape[1:]) != tuple(event_shape):
        expected = ", ".join(["B", *map(str, event_shape)])
        raise NetworkInputError(f"network expects x of shape ({expected}), got {tuple(x.shape)}")
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise NetworkInputError(f"network expects s of shape ({x.shape[0]},), got {tuple(s.shape)}")
    if num_classes is not None:
        if labels is None:
            raise NetworkInputError(f"this network is class-conditional ({num_classes} classes): pass labels")
        if labels.shape != (x.shape[0],):
            raise NetworkInputError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    elif labels is not None:
        raise NetworkInputError("this network is unconditional; labels must be None")
    return x, s
