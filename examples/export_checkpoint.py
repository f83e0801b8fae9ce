"""Export a model trained in your own code as a neural-entropy checkpoint (docs/checkpoints.md).

Needs only torch and safetensors. `export_checkpoint` is the part to copy; the rest is a demo: a
plain PyTorch module laid out like the service's paper MLP (same parameter names and shapes),
standing in for the network you trained, written to a .safetensors file you can upload with

    curl -H "Authorization: Bearer $KEY" -F file=@my_model.safetensors \
         http://127.0.0.1:8000/v1/checkpoints

Run: python examples/export_checkpoint.py [OUT.safetensors]
"""

from __future__ import annotations

import json
import math
import sys

import torch
from safetensors.torch import save_file
from torch import nn


# ---- the ~20 lines to copy ----
def export_checkpoint(state_dict, path, *, network, process, event_shape,
                      parametrization="entropy_matching", value_range=None, num_classes=None,
                      provenance=None):
    """Write `state_dict` (names/shapes as the service's network) with its config as metadata."""
    config = {
        "format_version": 1,
        "network": network,                  # e.g. {"arch": "mlp", "dim": 2} (omitted: defaults)
        "parametrization": parametrization,  # "entropy_matching" | "score" | "noise"
        "process": process,                  # e.g. {"kind": "vp", "beta_max": 16.0, "kappa": 1.0}
        "event_shape": list(event_shape),    # one sample: [D] or [C, H, W]
        "value_range": value_range,          # e.g. [-1, 1] for images, or None
        "num_classes": num_classes,          # class-conditional networks only
        "provenance": provenance or {},      # anything JSON: source, epoch, dataset hash, ...
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, path, metadata={"neural_entropy": json.dumps(config)})


# ---- demo: a plain PyTorch network with the paper MLP's layout ----
class FourierFeatures(nn.Module):
    def __init__(self, n_in: int, n_freq: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", scale * torch.randn(n_freq, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.frequencies.t()
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class MyMLP(nn.Module):
    """e_theta(x, s): Fourier features of x and s, then sigmoid(LayerNorm(Dense h + Dense e))."""

    def __init__(self, dim: int, n_freq: int = 256, width: int = 512,
                 hidden: tuple[int, ...] = (512, 256), scale: float = 10.0) -> None:
        super().__init__()
        self.x_features, self.s_features = FourierFeatures(dim, n_freq, scale), FourierFeatures(
            1, n_freq, scale)
        self.x_embed, self.s_embed = nn.Linear(2 * n_freq, width), nn.Linear(2 * n_freq, width)
        widths = (width, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, hidden, strict=False))
        self.time_proj = nn.ModuleList(nn.Linear(width, b) for b in hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(b, eps=1e-6) for b in hidden)
        self.out = nn.Linear(hidden[-1], dim)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.x_embed(self.x_features(x)))
        e = torch.sigmoid(self.s_embed(self.s_features(s[:, None])))
        for dense, proj, norm in zip(self.hidden, self.time_proj, self.norms, strict=True):
            h = torch.sigmoid(norm(dense(h) + proj(e)))
        return self.out(h)


def main(path: str = "my_model.safetensors") -> None:
    torch.manual_seed(0)
    model = MyMLP(dim=2, n_freq=64, width=128, hidden=(128, 64))  # ... train it here ...
    export_checkpoint(
        model.state_dict(), path,
        network={"arch": "mlp", "dim": 2, "fourier_features": 64, "width": 128,
                 "hidden_widths": [128, 64]},
        process={"kind": "vp", "beta_min": 0.1, "beta_max": 16.0, "kappa": 1.0},
        event_shape=[2], provenance={"source": "examples/export_checkpoint.py"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
