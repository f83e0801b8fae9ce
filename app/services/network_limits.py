"""Bounded networks: strict types for `network` overrides, and caps on depth and size checked
before a job is stored (422 naming the cap), so a worker never gets a network it cannot hold.

- depth: MLP hidden layers, or U-Net levels x residual blocks per level (MAX_NETWORK_LAYERS);
  checked from the config alone, before anything is built;
- size: parameters plus buffers (the Fourier frequencies) of the network built on PyTorch's
  `meta` device, which allocates no memory (MAX_NETWORK_PARAMETERS).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from app.errors import over_limit, unprocessable
from core.settings import Settings
from models.networks import MLPConfig, UNetConfig, build_network
from models.networks.factory import NetworkConfig

# fields whose default is None, and the JSON type they take otherwise
_OPTIONAL_INT = frozenset({"num_classes"})
_OPTIONAL_INT_LIST = frozenset({"event_shape"})


def _type_error(key: str, want: str) -> Exception:
    return unprocessable(f"network.{key} must be {want}", f"network.{key}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_override_types(overrides: dict[str, Any], base: dict[str, Any]) -> None:
    """Each override has the JSON type of the default it replaces: no strings or booleans for
    numbers, finite floats, lists of integers for shapes. Unknown keys are left to the config
    (which names them)."""
    for key, value in overrides.items():
        if key in _OPTIONAL_INT:
            if value is not None and not _is_int(value):
                raise _type_error(key, "an integer or null")
            continue
        if key in _OPTIONAL_INT_LIST:
            if value is not None and not (isinstance(value, list)
                                          and all(_is_int(v) for v in value)):
                raise _type_error(key, "a list of integers or null")
            continue
        if key not in base:
            continue
        default = base[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise _type_error(key, "a boolean")
        elif isinstance(default, int):
            if not _is_int(value):
                raise _type_error(key, "an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise _type_error(key, "a finite number")
        elif isinstance(default, (list, tuple)):
            if not isinstance(value, list) or not all(_is_int(v) for v in value):
                raise _type_error(key, "a list of integers")
        elif isinstance(default, str) and not isinstance(value, str):
            raise _type_error(key, "a string")


def layer_count(config: NetworkConfig) -> tuple[int, str]:
    """(depth, the field that sets it)."""
    if isinstance(config, MLPConfig):
        return len(config.hidden_widths), "network.hidden_widths"
    if isinstance(config, UNetConfig):
        return len(config.channel_mults) * config.num_res_blocks, "network.num_res_blocks"
    unet = config.unet  # a diffusers UNet2DModel: blocks x layers per block
    return (len(unet.get("block_out_channels", ())) * int(unet.get("layers_per_block", 1)),
            "network.unet")


def parameter_count(config: NetworkConfig) -> int:
    """Parameters plus buffers of the network, built on the meta device (no memory, no CUDA)."""
    with torch.device("meta"):
        net = build_network(config)
    return sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())


def check_network_size(config: NetworkConfig, settings: Settings) -> None:
    """422 naming MAX_NETWORK_LAYERS or MAX_NETWORK_PARAMETERS when the network is too big."""
    layers, field = layer_count(config)
    if layers > settings.max_network_layers:
        raise over_limit(field, f"{layers} layers", settings.max_network_layers,
                         "max_network_layers")
    n = parameter_count(config)
    if n > settings.max_network_parameters:
        raise over_limit("network", f"{n} parameters", settings.max_network_parameters,
                         "max_network_parameters")
