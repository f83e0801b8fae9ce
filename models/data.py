"""Data: uploaded arrays as a validated `DataSet`, diagonal Gaussian mixtures with exact scores of
the diffused density at every time (docs/math.md §3.4), and scikit-learn's bundled 8x8 digits.

Scaling rule of `array_dataset` (documented for users):
- vectors (N, D) are kept as given (`scale="auto"` means `"none"` for vectors);
- images (N, C, H, W), (N, H, W, C) or (N, H, W) are mapped linearly from their value range
  [lo, hi] to [-1, 1] (`scale="auto"` means `"symmetric"` for images). The range is `value_range`
  when given; otherwise it is inferred: integer arrays with values in [0, 255] -> [0, 255] (8-bit);
  floats in [0, 1] -> [0, 1]; floats in [-1, 1] -> [-1, 1]; floats in [0, 255] -> [0, 255];
  anything else -> [min, max] of the array.
- `scale="unit"` maps [lo, hi] to [0, 1]; `scale="standardize"` (vectors) subtracts the
  per-coordinate mean and divides by the per-coordinate std (entropies then change by the log
  Jacobian, sum_i ln std_i); `scale="none"` keeps the numbers.
`DataSet.value_range` is the range AFTER scaling (None for unscaled vectors without a range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from models.processes import ForwardProcess
from models.tensors import append_dims

Layout = Literal["auto", "vector", "nchw", "nhwc", "nhw"]
Scale = Literal["auto", "none", "symmetric", "unit", "standardize"]


class DataError(ValueError):
    """Uploaded data that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class DataSet:
    """Samples `x` float32 (N, D) or (N, C, H, W), optional int64 `labels` (N,)."""

    x: torch.Tensor
    labels: torch.Tensor | None = None
    value_range: tuple[float, float] | None = None
    num_label_values: int | None = field(default=None, compare=False)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def dim(self) -> int:
        """D, the number of coordinates of one sample."""
        return int(math.prod(self.event_shape))

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    @property
    def num_classes(self) -> int | None:
        """Number of classes (max label + 1), or None without labels."""
        if self.labels is None:
            return None
        if self.num_label_values is not None:
            return self.num_label_values
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> DataSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        labels = None if self.labels is None else self.labels[idx]
        return DataSet(self.x[idx], labels, self.value_range, self.num_classes)

    def split(self, test_fraction: float, seed: int = 0) -> tuple[DataSet, DataSet]:
        """(train, test), deterministic in `seed`; both non-empty when 0 < fraction < 1 and N >= 2."""
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
        n = len(self)
        n_test = int(round(test_fraction * n))
        if test_fraction > 0 and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
        return self.subset(train_idx), self.subset(test_idx)

    def nested_order(self, seed: int = 0) -> torch.Tensor:
        """A seeded ordering of all N indices whose prefixes are the nested subsets.

        Without labels: one seeded permutation. With labels: class-balanced, i.e. round r takes the
        r-th point of each class's own seeded permutation (classes that still have one, in a
        seeded order per round), so every prefix holds each class's count to within one (until a
        class runs out). The first n entries for n < m are a subset of the first m.
        """
        g = torch.Generator().manual_seed(int(seed))
        n = len(self)
        if self.labels is None:
            return torch.randperm(n, generator=g)
        labels = self.labels.to(torch.long)
        classes = torch.unique(labels)  # sorted
        rank = torch.empty(n, dtype=torch.long)  # position of each point in its class's permutation
        cls = torch.searchsorted(classes, labels)  # class index 0..C-1 of each point
        for c in range(len(classes)):
            members = (cls == c).nonzero().flatten()
            rank[members[torch.randperm(len(members), generator=g)]] = torch.arange(len(members))
        rounds = int(rank.max()) + 1 if n else 0
        # position of class c within round r: a fresh seeded class order per round
        place = torch.argsort(torch.rand(rounds, len(classes), generator=g), dim=1).argsort(dim=1)
        key = rank * len(classes) + place[rank, cls]
        return torch.argsort(key)

    def nested_subset(self, n: int, seed: int = 0) -> DataSet:
        """The first `n` points of `nested_order(seed)` (kept in their original order): smaller
        sets are subsets of larger ones, class-balanced when there are labels; n = N is all."""
        if not 1 <= n <= len(self):
            raise ValueError(f"a subset of {n} points needs 1 <= n <= {len(self)}")
        return self.subset(self.nested_order(seed)[:n].sort().values)


def _to_numeric_array(x: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise DataError(f"{what} is not a rectangular numeric array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} has non-numeric dtype {arr.dtype}; expected integers or floats")
    return arr


def _infer_layout(arr: np.ndarray) -> str:
    if arr.ndim == 2:
        return "vector"
    if arr.ndim == 3:
        return "nhw"
    if arr.ndim == 4:
        if arr.shape[1] in (1, 2, 3, 4):
            return "nchw"
        if arr.shape[3] in (1, 2, 3, 4):
            return "nhwc"
        raise DataError(f"cannot tell channels in a 4-d array of shape {arr.shape}; pass layout='nchw' or 'nhwc'")
    raise DataError(
        f"data must have rank 2 (N, D) or 3-4 (images), got rank {arr.ndim} with shape {arr.shape}"
        + ("; reshape 1-d data to (N, 1)" if arr.ndim == 1 else "")
    )


def _infer_range(arr: np.ndarray) -> tuple[float, float]:
    lo, hi = float(arr.min()), float(arr.max())
    if arr.dtype.kind in "biu" and lo >= 0 and hi <= 255:
        return (0.0, 255.0)
    for cand in ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)):
        if lo >= cand[0] and hi <= cand[1]:
            return cand
    return (lo, hi)


def array_dataset(
    x: Any,
    labels: Any = None,
    *,
    layout: Layout = "auto",
    value_range: tuple[float, float] | None = None,
    scale: Scale = "auto",
) -> DataSet:
    """Validate an uploaded array and scale it by the module's documented rule.

    x: (N, D) vectors or images (N, C, H, W) / (N, H, W, C) / (N, H, W); labels: ints (N,) >= 0.
    Raises DataError naming the problem (empty, NaN/Inf, non-numeric, wrong rank, bad labels).
    """
    arr = _to_numeric_array(x, "data")
    if arr.size == 0:
        raise DataError(f"data is empty (shape {arr.shape})")
    shape_kind: str = _infer_layout(arr) if layout == "auto" else layout
    expected_rank = {"vector": 2, "nchw": 4, "nhwc": 4, "nhw": 3}.get(shape_kind)
    if expected_rank is None:
        raise DataError(f"unknown layout {shape_kind!r}; expected auto, vector, nchw, nhwc or nhw")
    if arr.ndim != expected_rank:
        raise DataError(f"layout {shape_kind!r} needs rank {expected_rank}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(arr.shape[0], -1).any(axis=1).sum())
        raise DataError(f"data contains NaN or Inf values (in {bad} of {arr.shape[0]} samples)")
    if shape_kind == "nhwc":
        arr = np.transpose(arr, (0, 3, 1, 2))
    elif shape_kind == "nhw":
        arr = arr[:, None]
    is_image = shape_kind != "vector"
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise DataError(f"value_range must be finite with lo < hi, got {value_range}")
        if arr.min() < lo or arr.max() > hi:
            raise DataError(f"data values [{arr.min():g}, {arr.max():g}] lie outside value_range [{lo:g}, {hi:g}]")
    scale = ("symmetric" if is_image else "none") if scale == "auto" else scale
    data = arr.astype(np.float64)
    out_range: tuple[float, float] | None = value_range
    if scale in ("symmetric", "unit"):
        lo, hi = value_range if value_range is not None else _infer_range(arr)
        if not hi > lo:
            raise DataError(f"data is constant ({lo:g}); cannot scale it to a range")
        unit = (data - lo) / (hi - lo)
        data, out_range = (2.0 * unit - 1.0, (-1.0, 1.0)) if scale == "symmetric" else (unit, (0.0, 1.0))
    elif scale == "standardize":
        std = data.std(axis=0)
        if (std == 0).any():
            raise DataError("a coordinate is constant; cannot standardize it")
        data, out_range = (data - data.mean(axis=0)) / std, None
    elif scale != "none":
        raise DataError(f"unknown scale {scale!r}; expected auto, none, symmetric, unit, standardize")
    label_tensor = None if labels is None else _check_labels(labels, arr.shape[0])
    return DataSet(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), label_tensor, out_range)


def _check_labels(labels: Any, n: int) -> torch.Tensor:
    lab = _to_numeric_array(labels, "labels")
    if lab.ndim != 1 or lab.shape[0] != n:
        raise DataError(f"labels must have shape ({n},) to match the data, got {lab.shape}")
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all() or (lab != np.round(lab)).any():
            raise DataError("labels must be integers")
    if lab.dtype.kind == "b":
        raise DataError("labels must be integers, got booleans")
    if lab.min() < 0:
        raise DataError(f"labels must be >= 0, got minimum {lab.min()}")
    return torch.from_numpy(lab.astype(np.int64))


def load_digits() -> DataSet:
    """scikit-learn's bundled 8x8 digits (no download): (1797, 1, 8, 8), [0, 16] -> [-1, 1], labels."""
    # imported here: scikit-learn is heavy and only this loader needs it
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8) in [0, 16]
    return array_dataset(images, bunch.target, layout="nhw", value_range=(0.0, 16.0))


class GaussianMixture:
    """sum_j w_j N(m_j, diag(h_j^2)) in R^D with exact log-densities and scores of its diffusion.

    Under any ForwardProcess the time-s marginal is again a mixture (docs/math.md §3.4):
    p_s = sum_j w_j N(mu(s) m_j, diag(mu(s)^2 h_j^2 + Sigma(s)^2)).
    Parameters are stored in float64; evaluations follow the dtype of their input. Its entropy
    h(p_s) by grid quadrature is `models.entropy.closed_forms.mixture_entropy`.
    """

    def __init__(self, weights: Any, means: Any, stds: Any) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        m = torch.as_tensor(means, dtype=torch.float64)
        h = torch.as_tensor(stds, dtype=torch.float64)
        if m.ndim != 2 or h.shape != m.shape or w.shape != m.shape[:1] or m.shape[0] == 0:
            raise ValueError(
                f"need weights (K,), means (K, D), stds (K, D); got {tuple(w.shape)}, "
                f"{tuple(m.shape)}, {tuple(h.shape)}"
            )
        if not (torch.isfinite(w).all() and torch.isfinite(m).all() and torch.isfinite(h).all()):
            raise ValueError("mixture parameters must be finite")
        if (w <= 0).any() or (h <= 0).any():
            raise ValueError("mixture weights and stds must be positive")
        if abs(float(w.sum()) - 1.0) > 1e-12:  # normalise, but keep stored weights bit for bit
            w = w / w.sum()
        self.weights, self.means, self.stds = w, m, h

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @classmethod
    def paper(
        cls, n_components: int = 5, dim: int = 2, box: float = 4.0, scale: float = 1.0, seed: int = 0
    ) -> GaussianMixture:
        """The paper's random mixtures (docs/math.md §5): means uniform in [-box/2, box/2]^D, stds uniform
        in [0.5, 1] * scale per coordinate, weights uniform(0, 1) normalised.

        All three are drawn independently from one seeded generator. The paper's own code reused a
        single PRNG key for the widths and the weights, so there the weights were tied to the widths;
        here they are not.
        """
        g = torch.Generator().manual_seed(int(seed))
        means = (torch.rand(n_components, dim, generator=g, dtype=torch.float64) - 0.5) * box
        stds = (0.5 + 0.5 * torch.rand(n_components, dim, generator=g, dtype=torch.float64)) * scale
        weights = torch.rand(n_components, generator=g, dtype=torch.float64) + 1e-3
        return cls(weights, means, stds)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "stds": self.stds.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GaussianMixture:
        return cls(d["weights"], d["means"], d["stds"])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        return_components: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """n draws (n, D); with return_components also the component index of each (n,)."""
        w, m, h = (t.to(device=device) for t in (self.weights, self.means, self.stds))
        comp = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        x = (m.index_select(0, comp) + h.index_select(0, comp) * z).to(dtype)
        return (x, comp) if return_components else x

    def as_dataset(self, n: int, seed: int = 0) -> DataSet:
        """n draws as a DataSet (vectors, no labels)."""
        x = self.sample(n, torch.Generator().manual_seed(int(seed)))
        assert isinstance(x, torch.Tensor)
        return DataSet(x)

    # ---- moments ----
    def mean(self) -> torch.Tensor:
        """E x, shape (D,)."""
        return self.weights @ self.means

    def second_moment(self) -> torch.Tensor:
        """E x_d^2 per coordinate, shape (D,)."""
        return self.weights @ (self.means**2 + self.stds**2)

    def data_variance(self) -> float:
        """Mean per-coordinate variance (scalar)."""
        return float((self.second_moment() - self.mean() ** 2).mean())

    # ---- densities of the diffused mixture ----
    def _marginal(
        self, y: torch.Tensor, s: torch.Tensor | None, process: ForwardProcess | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-component (B, K, D) differences y - mu m_j and variances, and log w_j + log N_j (B, K)."""
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (B, {self.dim}), got {tuple(y.shape)}")
        m, h2 = self.means.to(y), (self.stds**2).to(y)
        if process is None or s is None:
            diff, var = y[:, None, :] - m[None], h2[None].expand(y.shape[0], -1, -1)
        else:
            s = torch.as_tensor(s, dtype=y.dtype, device=y.device).expand(y.shape[0])
            mu = append_dims(process.mean_scale(s), 3)
            var = mu**2 * h2[None] + append_dims(process.variance(s), 3)
            diff = y[:, None, :] - mu * m[None]
        log_n = -0.5 * ((diff**2 / var) + torch.log(2.0 * math.pi * var)).sum(dim=2)
        return diff, var, log_n + torch.log(self.weights.to(y))[None]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_data(x) in nats, x (B, D) -> (B,)."""
        return torch.logsumexp(self._marginal(x, None, None)[2], dim=1)

    def log_prob_at(self, y: torch.Tensor, s: torch.Tensor, process: ForwardProcess) -> torch.Tensor:
        """log p_s(y) of the diffused mixture; y (B, D), s (B,) or scalar -> (B,)."""
        return torch.logsumexp(self._marginal(y, s, process)[2], dim=1)

    def score(self, y: torch.Tensor, s: torch.Tensor, process: ForwardProcess) -> torch.Tensor:
        """Exact grad_y log p_s(y), (B, D): responsibilities times component scores."""
        diff, var, log_joint = self._marginal(y, s, process)
        resp = torch.softmax(log_joint, dim=1)[:, :, None]
        return -(resp * diff / var).sum(dim=1)


def is_eight_bit(source_dtype: str | None) -> bool:
    """True when an upload's dtype (as stored: numpy's `dtype.str`, e.g. "|u1", or a name such as
    "uint8") is 8-bit unsigned levels (0..255)."""
    if not source_dtype:
        return False
    try:
        return np.dtype(source_dtype) == np.uint8
    except TypeError:
        return False
