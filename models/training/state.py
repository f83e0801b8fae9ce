"""A resumable snapshot of entropy-matching training, stored as safetensors + JSON (no pickle).

`TrainingState` holds the network weights, the Adam moments and step counts, the EMA weights, the
position in the run (epoch, step) and the loss accumulators.  The random streams need no stored
state: data order and noise are drawn from generators seeded by (seed, epoch, chunk) (see
models.training.loop), so a run resumed from a state repeats the uninterrupted run bit for bit on CPU.

File layout: one safetensors blob; tensors are named "model/<name>", "ema/<name>" and
"optim/<param index>/<key>"; its `__metadata__` has one key, "training_state", a JSON object with
the format version, the training config, the counters and the caller's `extra` metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

STATE_FORMAT = "neural-entropy-training-state"
STATE_VERSION = 1
_META_KEY = "training_state"


class TrainingStateError(ValueError):
    """A training-state blob that cannot be read or does not fit the run."""


@dataclass
class TrainingState:
    """Everything needed to continue a run; tensors are CPU copies."""

    config: dict[str, Any]  # TrainingConfig.to_dict() of the run
    epoch: int  # completed epochs
    step: int  # completed steps of the epoch in progress (0 at an epoch boundary)
    global_step: int  # completed optimizer steps in all
    model: dict[str, torch.Tensor]  # network state dict
    optimizer: dict[int, dict[str, torch.Tensor]]  # Adam state per parameter index
    ema: dict[str, torch.Tensor] | None = None  # EMA of the network state dict
    losses: list[float] = field(default_factory=list)  # mean training loss of each completed epoch
    loss_sum: float = 0.0  # sum of step losses x throws in the epoch in progress
    loss_count: int = 0  # throws in the epoch in progress
    extra: dict[str, Any] = field(default_factory=dict)  # caller metadata (network config, process...)

    def to_bytes(self) -> bytes:
        """safetensors bytes with the JSON header described in the module docstring."""
        tensors = {f"model/{k}": v for k, v in self.model.items()}
        if self.ema is not None:
            tensors.update({f"ema/{k}": v for k, v in self.ema.items()})
        for index, entry in self.optimizer.items():
            tensors.update({f"optim/{index}/{k}": v for k, v in entry.items()})
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        meta = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": self.config,
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "losses": self.losses,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "has_ema": self.ema is not None,
            "extra": self.extra,
        }
        return st_save(tensors, metadata={_META_KEY: json.dumps(meta)})

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingState:
        """Inverse of `to_bytes`; raises TrainingStateError for anything else (never unpickles)."""
        try:
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            meta = json.loads(header["__metadata__"][_META_KEY])
            tensors = st_load(data)
        except Exception as exc:  # malformed bytes of any kind
            raise TrainingStateError(f"not a training state: {exc}") from exc
        if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
            raise TrainingStateError(f"unsupported training state {meta.get('format')} v{meta.get('version')}")
        model, ema, optim = {}, {}, {}  # type: ignore[var-annotated]
        for name, value in tensors.items():
            group, _, rest = name.partition("/")
            if group == "model":
                model[rest] = value
            elif group == "ema":
                ema[rest] = value
            elif group == "optim":
                index, _, key = rest.partition("/")
                optim.setdefault(int(index), {})[key] = value
            else:
                raise TrainingStateError(f"unexpected tensor {name!r} in training state")
        return cls(
            config=meta["config"],
            epoch=int(meta["epoch"]),
            step=int(meta["step"]),
            global_step=int(meta["global_step"]),
            model=model,
            optimizer=optim,
            ema=ema if meta["has_ema"] else None,
            losses=[float(v) for v in meta["losses"]],
            loss_sum=float(meta["loss_sum"]),
            loss_count=int(meta["loss_count"]),
            extra=meta["extra"],
        )

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file + rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> TrainingState:
        return cls.from_bytes(Path(path).read_bytes())


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    """Per-parameter tensors of an optimizer, indexed like its state_dict, as CPU copies."""
    state = optimizer.state_dict()["state"]
    out: dict[int, dict[str, torch.Tensor]] = {}
    for index, entry in state.items():
        out[int(index)] = {
            k: (v.detach().cpu().clone() if torch.is_tensor(v) else torch.tensor(float(v))) for k, v in entry.items()
        }
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, torch.Tensor]]) -> None:
    """Restore per-parameter tensors into an optimizer built over the same parameters."""
    groups = optimizer.state_dict()["param_groups"]
    n_params = sum(len(g["params"]) for g in groups)
    if any(i < 0 or i >= n_params for i in state):
        raise TrainingStateError(f"optimizer state names parameters beyond the {n_params} of this network")
    optimizer.load_state_dict({"state": {i: dict(v) for i, v in state.items()}, "param_groups": groups})
