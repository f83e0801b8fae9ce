"""Shape helpers: per-sample scalars have shape (B,) and are broadcast against (B, ...) tensors."""

from __future__ import annotations

import torch


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """View per-sample values of shape (B,) as (B, 1, ..., 1) with `ndim` dimensions in all."""
    missing = ndim - values.ndim
    if missing < 0:
        raise ValueError(f"cannot broadcast a {values.ndim}-d tensor to {ndim} dimensions")
    return values.reshape(values.shape + (1,) * missing)


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """Sum a (B, ...) tensor over every dimension but the first: returns (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Euclidean norm of a (B, ...) tensor: returns (B,)."""
    return sum_except_batch(x * x)


def event_size(x: torch.Tensor) -> int:
    """Number of dimensions D of one sample of a (B, ...) tensor."""
    return int(x[0].numel()) if x.shape[0] else int(torch.Size(x.shape[1:]).numel())
