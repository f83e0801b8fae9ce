"""Networks from configs: the config union, `build_network`, `network_config_from_dict` (the
inverse of `config.to_dict()`) and the default architecture for a data shape."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn

from models.networks.mlp import MLPConfig, PaperMLP
from models.networks.unet import UNet, UNetConfig
from models.pipelines.config import ARCH as DIFFUSERS_ARCH
from models.pipelines.config import DiffusersUNetConfig

NetworkConfig = MLPConfig | UNetConfig | DiffusersUNetConfig


def network_config_from_dict(d: dict[str, Any]) -> NetworkConfig:
    """Inverse of `config.to_dict()`; unknown "arch" or fields raise ValueError."""
    params = dict(d)
    arch = params.pop("arch", "mlp")
    if arch == DIFFUSERS_ARCH:  # a diffusers UNet2DModel (models.pipelines)
        return DiffusersUNetConfig.from_dict(params)
    cls: type[MLPConfig] | type[UNetConfig]
    if arch == "mlp":
        cls = MLPConfig
    elif arch == "unet":
        cls = UNetConfig
    else:
        raise ValueError(f"unknown network arch {arch!r}; expected 'mlp', 'unet' or '{DIFFUSERS_ARCH}'")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {arch} config fields: {unknown}")
    for key in ("hidden_widths", "event_shape", "channel_mults", "attention_resolutions"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad {arch} config: {exc}") from exc


def build_network(config: NetworkConfig) -> nn.Module:
    """The network for a config; deterministic given config.seed."""
    if isinstance(config, MLPConfig):
        return PaperMLP(config)
    if isinstance(config, UNetConfig):
        return UNet(config)
    if isinstance(config, DiffusersUNetConfig):
        from models.pipelines.unet2d import build_unet  # imports diffusers: only when needed

        return build_unet(config)  # type: ignore[return-value]  # a torch Module (diffusers is untyped)
    raise TypeError(f"not a network config: {config!r}")


def default_network_config(
    event_shape: tuple[int, ...] | torch.Size, num_classes: int | None = None, seed: int = 0
) -> NetworkConfig:
    """Paper MLP for vectors (D,); a small U-Net for images (C, H, W) sized by the image."""
    shape = tuple(int(n) for n in event_shape)
    if len(shape) == 1:
        return MLPConfig(dim=shape[0], num_classes=num_classes, seed=seed)
    if len(shape) == 3:
        channels, height, width = shape
        if height != width:
            raise ValueError(f"default U-Net needs square images, got {height}x{width}")
        if height <= 8:
            return UNetConfig(
                channels,
                height,
                base_channels=32,
                channel_mults=(1, 2),
                attention_resolutions=(),
                num_classes=num_classes,
                seed=seed,
            )
        if height <= 16:
            return UNetConfig(
                channels,
                height,
                base_channels=32,
                channel_mults=(1, 2, 2),
                attention_resolutions=(height // 4,),
                num_classes=num_classes,
                seed=seed,
            )
        return UNetConfig(
            channels,
            height,
            base_channels=64,
            channel_mults=(1, 2, 2),
            attention_resolutions=((height + 3) // 4,),
            num_classes=num_classes,
            seed=seed,
        )
    raise ValueError(f"no default network for samples of shape {shape}; use (D,) or (C, H, W)")
