"""A diffusers `UNet2DModel` behind this service's network interface net(x, s, labels).

`DiffusersUNet` subclasses UNet2DModel, so its state dict has exactly diffusers' tensor names and a
stored checkpoint's weights load into diffusers unchanged. `forward(x, s, labels)` feeds the
timestep t = s T - 1 (T = num_train_timesteps; the training step k sits at s = (k+1)/T):
as a float into the sinusoidal embedding ("float", the default), or rounded to the nearest training
step ("round"); docs/diffusers.md §2 measures the difference. The output is the raw prediction
(epsilon, v or x0), which `models.pipelines.adapter` reads as a score.

Imports diffusers (with HF_HUB_OFFLINE=1 set first: nothing is ever fetched from a hub).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402

from models.pipelines.config import DiffusersUNetConfig  # noqa: E402


class DiffusersUNet(UNet2DModel):  # type: ignore[misc]
    """UNet2DModel read as net(x, s, labels) -> prediction shaped like x."""

    def configure(self, num_train_timesteps: int, timestep_input: str) -> DiffusersUNet:
        self.nets_train_timesteps = int(num_train_timesteps)
        self.nets_timestep_input = timestep_input
        return self

    def timestep(self, s: torch.Tensor) -> torch.Tensor:
        """The diffusers timestep for s (B,): s T - 1, fractional or rounded."""
        t = s.to(torch.float32) * self.nets_train_timesteps - 1.0
        return torch.round(t) if self.nets_timestep_input == "round" else t

    def forward(self, x: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if self.config.num_class_embeds is not None and labels is None:  # type: ignore[attr-defined]
            raise ValueError("this UNet is class-conditional: labels are required")
        t = self.timestep(s.reshape(-1).expand(x.shape[0]) if s.numel() == 1 else s.reshape(-1))
        out = super().forward(x, t, class_labels=labels if self.config.num_class_embeds is not None else None)  # type: ignore[misc,attr-defined]
        return out.sample


def build_unet(config: DiffusersUNetConfig) -> DiffusersUNet:
    """The network of `config` (random weights; on the meta device under `with torch.device("meta")`)."""
    unet = DiffusersUNet(**config.unet)
    return unet.configure(config.num_train_timesteps, config.timestep_input)


def count_parameters(config: DiffusersUNetConfig) -> int:
    """Parameters of the architecture, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        net = DiffusersUNet(**config.unet)
    return sum(p.numel() for p in net.parameters())  # type: ignore[attr-defined]
