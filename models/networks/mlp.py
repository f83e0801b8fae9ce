"""Networks that map (x, s) to a tensor shaped like x (docs/math.md §2.1, §5).

The paper's MLP core (Premkumar, "Neural Entropy", section 5 and its JAX code): fixed Gaussian
random Fourier features of x and of s, each followed by Dense + sigmoid, then hidden layers

    h <- sigmoid(LayerNorm(Dense_w(h) + Dense_w(e)))      for w in hidden_widths

where e is the time embedding, and a final Dense(D) with no time term.  Networks know nothing of
processes: `models.parametrization` reads their output as e_theta, a score or a noise prediction.
Every architecture has a frozen config with `to_dict()` (carrying "arch"); `models.networks.factory`
builds networks from configs and reads configs back from dicts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn

from models.networks.inputs import check_inputs
from models.networks.mlp_fused import paper_mlp_fused

LAYER_NORM_EPS = 1e-6  # Flax's LayerNorm default, as in the paper's code


@dataclass(frozen=True)
class MLPConfig:
    """The paper's MLP core; defaults are the paper's (docs/math.md §5)."""

    dim: int  # D: numbers per sample (the product of event_shape)
    fourier_features: int = 256  # random frequencies per input; sin and cos give twice as many
    fourier_scale: float = 10.0  # the paper's grf_scale for x: frequencies ~ scale * N(0, init_std^2)
    time_fourier_scale: float = 10.0  # the same for s
    fourier_init_std: float = 0.01  # Flax's default normal() init, which the paper's code scales:
    # its frequencies have std 10 * 0.01 = 0.1 cycles per unit (smooth features), not 10
    width: int = 512  # width of the x and s embeddings
    hidden_widths: tuple[int, ...] = (512, 256)  # one time-conditioned hidden layer per entry
    num_classes: int | None = None  # class conditioning: a label embedding added to the time one
    event_shape: tuple[int, ...] | None = None  # shape of one sample; None means (dim,)
    seed: int = 0  # draws the Fourier frequencies and the initial weights
    fused: bool = True  # hand-written forward/backward for speed (same function, tested)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_widths", tuple(int(w) for w in self.hidden_widths))
        if self.event_shape is not None:
            object.__setattr__(self, "event_shape", tuple(int(n) for n in self.event_shape))
            if math.prod(self.event_shape) != self.dim:
                raise ValueError(f"event_shape {self.event_shape} does not hold dim={self.dim} numbers")
        for name in ("dim", "fourier_features", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MLPConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.hidden_widths or min(self.hidden_widths) < 1:
            raise ValueError(f"MLPConfig.hidden_widths must be positive widths, got {self.hidden_widths}")
        if not (self.fourier_scale > 0 and self.time_fourier_scale > 0 and self.fourier_init_std > 0):
            raise ValueError("MLPConfig Fourier scales and fourier_init_std must be > 0")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"MLPConfig.num_classes must be >= 1 or None, got {self.num_classes}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample, (D,) unless event_shape says otherwise."""
        return self.event_shape if self.event_shape is not None else (self.dim,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields plus "arch": "mlp"."""
        d = asdict(self)
        d["hidden_widths"] = list(self.hidden_widths)
        d["event_shape"] = None if self.event_shape is None else list(self.event_shape)
        return {"arch": "mlp", **d}

    def flops_per_evaluation(self) -> int:
        """Multiply-adds x 2 of the dense layers for one sample (the forward pass)."""
        f2 = 2 * self.fourier_features
        macs = self.dim * self.fourier_features + self.fourier_features  # Fourier projections
        macs += 2 * f2 * self.width  # x and s embeddings
        prev = self.width
        for w in self.hidden_widths:
            macs += prev * w + self.width * w
            prev = w
        macs += prev * self.dim
        return 2 * macs




class FourierFeatures(nn.Module):
    """Fixed [sin(2 pi x B^T), cos(2 pi x B^T)], B ~ N(0, std^2) (F, n): (B, n) -> (B, 2F)."""

    frequencies: torch.Tensor  # (F, n), a buffer

    def __init__(self, in_features: int, num_frequencies: int, std: float, generator: torch.Generator) -> None:
        super().__init__()
        freqs = std * torch.randn(num_frequencies, in_features, generator=generator)
        self.register_buffer("frequencies", freqs)  # (F, n), fixed, saved in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = (2.0 * math.pi) * (x @ self.frequencies.t())
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


def _lecun_normal_(weight: torch.Tensor, generator: torch.Generator) -> None:
    """Flax's default Dense init: truncated normal (+-2 std) with variance 1 / fan_in."""
    std = 1.0 / math.sqrt(weight.shape[1]) / 0.87962566103423978  # truncation correction
    nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def _dense(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        _lecun_normal_(layer.weight, generator)
        layer.bias.zero_()
    return layer


class PaperMLP(nn.Module):
    """The paper's MLP: forward(x (B, *event_shape), s (B,), labels (B,) | None) -> (B, *event_shape)."""

    x_features: FourierFeatures
    s_features: FourierFeatures
    x_embed: nn.Linear
    s_embed: nn.Linear
    out: nn.Linear

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        nf, width = config.fourier_features, config.width
        std = config.fourier_init_std
        self.x_features = FourierFeatures(config.dim, nf, config.fourier_scale * std, gen)
        self.s_features = FourierFeatures(1, nf, config.time_fourier_scale * std, gen)
        self.x_embed = _dense(2 * nf, width, gen)
        self.s_embed = _dense(2 * nf, width, gen)
        self.class_embed = nn.Embedding(config.num_classes, width) if config.num_classes else None
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, 0.0, 1.0, generator=gen)
        self.hidden = nn.ModuleList()
        self.time_proj = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = width
        for w in config.hidden_widths:
            self.hidden.append(_dense(prev, w, gen))
            self.time_proj.append(_dense(width, w, gen))
            self.norms.append(nn.LayerNorm(w, eps=LAYER_NORM_EPS))
            prev = w
        self.out = _dense(prev, config.dim, gen)

    def forward(self, x: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x, s = check_inputs(x, s, self.config.shape, labels, self.config.num_classes)
        flat = x.reshape(x.shape[0], self.config.dim)
        fused_ok = self.config.fused and self.class_embed is None
        if fused_ok and not (flat.requires_grad or s.requires_grad):
            out = paper_mlp_fused(flat, s, self._fused_arguments())
        else:
            out = self._reference_forward(flat, s, labels)
        return out.reshape(x.shape)

    def _reference_forward(self, x: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Plain autograd version of the network (also the reference the fused path is tested on)."""
        h = torch.sigmoid(self.x_embed(self.x_features(x)))  # (B, width)
        pre_e = self.s_embed(self.s_features(s[:, None]))
        if self.class_embed is not None:
            pre_e = pre_e + self.class_embed(labels)
        e = torch.sigmoid(pre_e)  # (B, width) time (and class) embedding
        for dense, proj, norm in zip(self.hidden, self.time_proj, self.norms, strict=True):
            h = torch.sigmoid(norm(dense(h) + proj(e)))
        return self.out(h)  # (B, D)

    def _fused_arguments(self) -> list[torch.Tensor]:
        args: list[torch.Tensor] = [
            self.x_features.frequencies,
            self.s_features.frequencies,
            self.x_embed.weight,
            self.x_embed.bias,
            self.s_embed.weight,
            self.s_embed.bias,
        ]
        for dense, proj, norm in zip(self.hidden, self.time_proj, self.norms, strict=True):
            for module in (dense, proj, norm):
                args += [cast(torch.Tensor, module.weight), cast(torch.Tensor, module.bias)]
        return args + [self.out.weight, self.out.bias]
