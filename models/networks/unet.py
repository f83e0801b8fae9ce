"""A small U-Net for images: forward(x (B, C, H, W), s (B,), labels (B,) | None) -> (B, C, H, W).

DDPM-style (Ho et al. 2020; the paper's CIFAR-10 core): residual blocks with GroupNorm and SiLU whose
second normalisation is modulated by the time (and class) embedding as (1 + scale, shift), optional
self-attention at chosen resolutions and in the middle, stride-2 convolutions down, nearest-neighbour
upsampling to the skip's size up (so odd sizes such as 28 -> 14 -> 7 work).  Output convolutions of
every residual branch and of the network start at zero, so e_theta starts at 0 (the equilibrium score).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.inputs import check_inputs


@dataclass(frozen=True)
class UNetConfig:
    """U-Net hyper-parameters; resolutions are spatial sizes (e.g. 7 for the 7x7 level of 28x28)."""

    in_channels: int  # C of the images
    image_size: int  # H = W
    base_channels: int = 32  # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # channels per level = base * mult; levels = len
    num_res_blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = ()  # spatial sizes that get self-attention
    mid_attention: bool = True  # self-attention at the bottom of the U
    num_heads: int = 1  # attention heads
    num_classes: int | None = None  # class conditioning: a label embedding added to the time one
    dropout: float = 0.0  # inside residual blocks, training only
    groups: int = 8  # GroupNorm groups (the gcd with the channel count is used)
    time_fourier_scale: float = 16.0  # std of the Gaussian Fourier frequencies of s
    seed: int = 0  # initial weights and Fourier frequencies

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        if self.in_channels < 1 or self.image_size < 1 or self.base_channels < 1:
            raise ValueError("UNetConfig: in_channels, image_size and base_channels must be >= 1")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"UNetConfig.channel_mults must be positive, got {self.channel_mults}")
        if self.image_size < 2 ** (len(self.channel_mults) - 1):
            raise ValueError(f"image_size {self.image_size} is too small for {len(self.channel_mults)} levels")
        if self.num_res_blocks < 1 or self.num_heads < 1 or self.groups < 1:
            raise ValueError("UNetConfig: num_res_blocks, num_heads and groups must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"UNetConfig.num_classes must be >= 1 or None, got {self.num_classes}")
        bad = [r for r in self.attention_resolutions if r not in self.resolutions]
        if bad:
            raise ValueError(f"attention_resolutions {bad} are not among the levels {self.resolutions}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial size at each level: image_size, ceil(/2), ..."""
        sizes, r = [], self.image_size
        for _ in self.channel_mults:
            sizes.append(r)
            r = (r + 1) // 2
        return tuple(sizes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return {"arch": "unet", **d}


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """x + conv(drop(silu(norm(conv(silu(norm(x)))) * (1 + scale) + shift))), emb -> (scale, shift)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.drop = _norm(c_out, groups), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, output projection starts at 0."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads, self.norm = heads, _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hgt, wid))


class UNet(nn.Module):
    """The U-Net of a UNetConfig; see the module docstring."""

    time_frequencies: torch.Tensor  # (base // 2 + 1,) fixed Fourier frequencies of s

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self._build(cfg)

    def _build(self, cfg: UNetConfig) -> None:
        base, groups, emb_dim = cfg.base_channels, cfg.groups, 4 * cfg.base_channels
        self.register_buffer("time_frequencies", cfg.time_fourier_scale * torch.randn(base // 2 + 1))
        self.time_mlp = nn.Sequential(nn.Linear(2 * (base // 2 + 1), emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(cfg.num_classes, emb_dim) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.in_channels, base, 3, padding=1)
        block = lambda c_in, c_out: ResBlock(c_in, c_out, emb_dim, cfg.dropout, groups)  # noqa: E731
        attend = lambda ch, res: (  # noqa: E731
            Attention(ch, cfg.num_heads, groups) if res in cfg.attention_resolutions else nn.Identity()
        )
        self.down, skips, ch = nn.ModuleList(), [base], base
        for level, (mult, res) in enumerate(zip(cfg.channel_mults, cfg.resolutions, strict=True)):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([block(ch, base * mult), attend(base * mult, res)]))
                ch = base * mult
                skips.append(ch)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1, self.mid2 = block(ch, ch), block(ch, ch)
        self.mid_attn = Attention(ch, cfg.num_heads, groups) if cfg.mid_attention else nn.Identity()
        self.up = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mults))):
            c_out, res = base * cfg.channel_mults[level], cfg.resolutions[level]
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleList([block(ch + skips.pop(), c_out), attend(c_out, res)]))
                ch = c_out
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after nearest upsampling
        self.norm_out = _norm(ch, groups)
        self.conv_out = _zero(nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    def embedding(self, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Time (and class) embedding, (B, 4 * base_channels)."""
        proj = (2.0 * math.pi) * s[:, None] * self.time_frequencies
        emb = self.time_mlp(torch.cat([proj.sin(), proj.cos()], dim=1))
        if self.class_embed is not None:
            emb = emb + self.class_embed(labels)
        return emb

    def forward(self, x: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x, s = check_inputs(x, s, self.config.shape, labels, self.config.num_classes)
        emb = self.embedding(s, labels)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), emb))
            else:
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
