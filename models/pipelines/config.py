"""The network config of a diffusers `UNet2DModel`, checked and bounded without importing diffusers.

`unet_config_from_json(d)` reads a pipeline's `unet/config.json`: `_class_name` must be
`UNet2DModel`; every other key must be a `UNet2DModel.__init__` argument (diffusers 0.42, the
`DEFAULTS` below; keys starting with "_" other than `_class_name` are dropped); every structural
number is bounded (`BOUNDS`), so that even building the architecture on the meta device to count
its parameters takes bounded time. Only what this service can feed is accepted: positional
(sinusoidal) time embedding, `out_channels == in_channels`, class labels through
`num_class_embeds` (class_embed_type null). The result has every argument filled in.

`DiffusersUNetConfig` is the `network` entry of our checkpoint config ("arch": "diffusers_unet2d"):
the UNet arguments, the scheduler's `num_train_timesteps` T (s maps to the timestep s T - 1) and
`timestep_input` ("float": the fractional timestep goes into the sinusoidal embedding as it is;
"round": the nearest training step; docs/diffusers.md §2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

ARCH = "diffusers_unet2d"
CLASS_NAME = "UNet2DModel"
TIMESTEP_INPUTS = ("float", "round")

# UNet2DModel.__init__ defaults in diffusers 0.42 (tests/models/test_pipelines.py checks them)
DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-05,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}

# (lo, hi) of every integer the architecture's size depends on
BOUNDS: dict[str, tuple[int, int]] = {
    "sample_size": (1, 1024),
    "in_channels": (1, 64),
    "out_channels": (1, 64),
    "time_embedding_dim": (1, 8192),
    "block_out_channels": (1, 4096),
    "layers_per_block": (1, 8),
    "attention_head_dim": (1, 4096),
    "norm_num_groups": (1, 1024),
    "attn_norm_num_groups": (1, 1024),
    "num_class_embeds": (1, 100_000),
    "downsample_padding": (0, 8),
    "freq_shift": (-1_000_000, 1_000_000),
    "num_train_timesteps": (1, 100_000),
}
MAX_BLOCKS = 8
BLOCK_LISTS = ("down_block_types", "up_block_types")
STRINGS = ("time_embedding_type", "mid_block_type", "downsample_type", "upsample_type", "act_fn",
           "resnet_time_scale_shift")
BOOLS = ("center_input_sample", "flip_sin_to_cos", "add_attention")
FLOATS = ("mid_block_scale_factor", "dropout", "norm_eps")


class PipelineConfigError(ValueError):
    """A pipeline config this service refuses; `field` names the key (e.g. unet.block_out_channels)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bounded_int(key: str, v: Any, where: str) -> int:
    lo, hi = BOUNDS[key]
    if not (_is_int(v) and lo <= v <= hi):
        raise PipelineConfigError(f"{where}.{key} must be an integer in {lo}..{hi}, got {v!r}", f"{where}.{key}")
    return int(v)


def unet_config_from_json(d: Any, where: str = "unet") -> dict[str, Any]:
    """The checked UNet2DModel arguments (every one filled in); PipelineConfigError otherwise."""
    if not isinstance(d, Mapping):
        raise PipelineConfigError(f"{where}/config.json must hold a JSON object", where)
    name = d.get("_class_name", CLASS_NAME)
    if name != CLASS_NAME:
        raise PipelineConfigError(
            f"{where}/config.json: _class_name {name!r} is not supported; only {CLASS_NAME} "
            "(unconditional or class-conditional via num_class_embeds) can be measured",
            f"{where}._class_name",
        )
    args = {k: v for k, v in d.items() if not str(k).startswith("_")}
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise PipelineConfigError(
            f"{where}/config.json: {unknown[0]!r} is not an argument of {CLASS_NAME} (diffusers 0.42)",
            f"{where}.{unknown[0]}",
        )
    out = {**DEFAULTS, **args}
    for key in BLOCK_LISTS:
        value = out[key]
        names_ok = isinstance(value, list | tuple) and all(isinstance(x, str) for x in value)
        if not (names_ok and 1 <= len(value) <= MAX_BLOCKS):
            raise PipelineConfigError(f"{where}.{key} must be a list of 1..{MAX_BLOCKS} block names", f"{where}.{key}")
        out[key] = list(value)
    channels = out["block_out_channels"]
    if not (isinstance(channels, list | tuple) and len(channels) == len(out["down_block_types"])):
        raise PipelineConfigError(
            f"{where}.block_out_channels must list one width per down block ({len(out['down_block_types'])})",
            f"{where}.block_out_channels",
        )
    out["block_out_channels"] = [_bounded_int("block_out_channels", c, where) for c in channels]
    if len(out["up_block_types"]) != len(channels):
        raise PipelineConfigError(f"{where}.up_block_types must have as many blocks as down_block_types",
                                  f"{where}.up_block_types")
    size = out["sample_size"]
    if isinstance(size, list | tuple) and len(size) == 2:
        out["sample_size"] = [_bounded_int("sample_size", v, where) for v in size]
    elif size is None:
        raise PipelineConfigError(f"{where}.sample_size is required (the image size the model takes)",
                                  f"{where}.sample_size")
    else:
        out["sample_size"] = _bounded_int("sample_size", size, where)
    for key in ("in_channels", "out_channels", "layers_per_block", "norm_num_groups", "downsample_padding",
                "freq_shift"):
        out[key] = _bounded_int(key, out[key], where)
    for key in ("time_embedding_dim", "attention_head_dim", "attn_norm_num_groups", "num_class_embeds",
                "num_train_timesteps"):
        if out[key] is not None:
            out[key] = _bounded_int(key, out[key], where)
    for key in STRINGS:
        if not (isinstance(out[key], str) or (key == "mid_block_type" and out[key] is None)):
            raise PipelineConfigError(f"{where}.{key} must be a string, got {out[key]!r}", f"{where}.{key}")
    for key in BOOLS:
        if not isinstance(out[key], bool):
            raise PipelineConfigError(f"{where}.{key} must be true or false, got {out[key]!r}", f"{where}.{key}")
    for key in FLOATS:
        v = out[key]
        if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
            raise PipelineConfigError(f"{where}.{key} must be a finite number, got {v!r}", f"{where}.{key}")
    if out["time_embedding_type"] != "positional":
        raise PipelineConfigError(
            f"{where}.time_embedding_type {out['time_embedding_type']!r} is not supported; only 'positional' "
            "(sinusoidal in the timestep) is", f"{where}.time_embedding_type")
    if out["class_embed_type"] is not None:
        raise PipelineConfigError(
            f"{where}.class_embed_type {out['class_embed_type']!r} is not supported; class labels go through "
            "num_class_embeds (class_embed_type null)", f"{where}.class_embed_type")
    if out["out_channels"] != out["in_channels"]:
        raise PipelineConfigError(
            f"{where}.out_channels ({out['out_channels']}) must equal in_channels ({out['in_channels']}): "
            "the prediction has the shape of the input", f"{where}.out_channels")
    return out


@dataclasses.dataclass(frozen=True)
class DiffusersUNetConfig:
    """Network config of a diffusers UNet2DModel behind our (x, s, labels) interface.

    unet: the UNet2DModel arguments, every one filled in (`unet_config_from_json`).
    num_train_timesteps: T of the scheduler; the network is fed timestep s T - 1.
    timestep_input: "float" (fractional timestep into the sinusoidal embedding) or "round".
    """

    unet: dict[str, Any]
    num_train_timesteps: int
    timestep_input: str = "float"

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", unet_config_from_json(self.unet))
        if not (_is_int(self.num_train_timesteps) and 2 <= self.num_train_timesteps <= 100_000):
            raise ValueError(f"num_train_timesteps must be an integer in 2..100000, got {self.num_train_timesteps!r}")
        if self.timestep_input not in TIMESTEP_INPUTS:
            raise ValueError(f"timestep_input must be one of {TIMESTEP_INPUTS}, got {self.timestep_input!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample the UNet takes."""
        size = self.unet["sample_size"]
        h, w = (size, size) if _is_int(size) else (size[0], size[1])
        return (int(self.unet["in_channels"]), int(h), int(w))

    @property
    def num_classes(self) -> int | None:
        return self.unet["num_class_embeds"]

    def to_dict(self) -> dict[str, Any]:
        return {"arch": ARCH, "unet": dict(self.unet), "num_train_timesteps": self.num_train_timesteps,
                "timestep_input": self.timestep_input}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiffusersUNetConfig:
        params = {k: v for k, v in d.items() if k != "arch"}
        unknown = sorted(set(params) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {ARCH} config fields: {unknown}")
        if "unet" not in params or "num_train_timesteps" not in params:
            raise ValueError(f"a {ARCH} config needs 'unet' and 'num_train_timesteps'")
        return cls(**params)
