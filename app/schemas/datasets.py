"""Dataset requests (JSON: synthetic mixture or built-in set; multipart: upload) and documents."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract import DEFAULT_SPLIT_SEED, DEFAULT_TEST_FRACTION, DatasetSplit, Seed

DEFAULT_MIXTURE_SAMPLES = 4096

Layout = Literal["auto", "vector", "nchw", "nhwc", "nhw"]
Scale = Literal["auto", "none", "symmetric", "unit", "standardize"]


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str | None = Field(None, max_length=200, description="Free-form label.")
    test_fraction: float = Field(
        DEFAULT_TEST_FRACTION, ge=0.0, lt=1.0,
        description="Share of the points held out for measurement (deterministic by split_seed).",
    )
    split_seed: Seed = Field(DEFAULT_SPLIT_SEED, description="Seed of the train/test split.")


class GaussianMixtureCreate(_Create):
    """A diagonal Gaussian mixture whose exact score is known (so S_tot can be computed).

    Either give `weights` (K,), `means` (K, D) and `stds` (K, D), or generate the paper's kind with
    `n_components`, `dim`, `box`, `scale` and `mixture_seed` (means uniform in a box of side `box`,
    stds uniform in [0.5, 1] x `scale`, weights uniform then normalised; all drawn independently).
    `n_samples` points are drawn with `seed`. Held-out data for a mixture are fresh draws from
    the mixture, so `test_fraction` defaults to 0 (all samples are for training).
    """

    kind: Literal["gaussian_mixture"]
    weights: list[float] | None = Field(None, description="Component weights (K,), summing to 1.")
    means: list[list[float]] | None = Field(None, description="Component means (K, D).")
    stds: list[list[float]] | None = Field(None, description="Per-coordinate stds (K, D), > 0.")
    n_components: int | None = Field(None, ge=1, le=1000, description="Paper-style: K.")
    dim: int | None = Field(None, ge=1, le=10_000, description="Paper-style: D.")
    box: float = Field(4.0, gt=0, description="Paper-style: side of the box holding the means.")
    scale: float = Field(1.0, gt=0, description="Paper-style: stds are drawn in [0.5, 1] x scale.")
    mixture_seed: Seed = Field(0, description="Paper-style: seed of the parameter draw.")
    n_samples: int = Field(DEFAULT_MIXTURE_SAMPLES, ge=1,
                           description="Points drawn (cap MAX_N_SAMPLES).")
    seed: Seed = Field(0, description="Seed of the sample draw.")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Held-out share (default 0: "
                                 "held-out data are fresh mixture draws).")


class DigitsCreate(_Create):
    """scikit-learn's bundled 8x8 digits: 1797 images (1, 8, 8) in [-1, 1], labels 0..9."""

    kind: Literal["digits"]


DatasetCreate = Annotated[GaussianMixtureCreate | DigitsCreate, Field(discriminator="kind")]


class DatasetPublic(BaseModel):
    """A stored data set. `x` is float32 (N, ...) already scaled; images are NCHW in [-1, 1]."""

    id: str
    name: str | None
    kind: str = Field(description="upload | gaussian_mixture | digits")
    n: int = Field(description="Number of points N.")
    shape: list[int] = Field(description="[N, ...] of the stored x.")
    event_shape: list[int] = Field(description="Shape of one point: [D] or [C, H, W].")
    dim: int = Field(description="Numbers per point D.")
    dtype: str
    source_dtype: str | None
    is_image: bool
    value_range: list[float] | None = Field(description="Range of x after scaling.")
    scaling: dict[str, Any] | None = Field(description="The scaling rule applied to the upload.")
    num_classes: int | None
    has_labels: bool
    split: DatasetSplit
    mixture: dict[str, Any] | None = Field(description="Mixture parameters (weights, means, stds).")
    sha256: str = Field(description="Hash of the stored canonical .npz blob.")
    source_sha256: str | None = Field(description="Hash of the uploaded bytes.")
    size_bytes: int | None
    created_at: datetime


class UploadForm(BaseModel):
    """Form fields that may accompany the multipart `file` (all optional). Form fields are text,
    so numbers are parsed from strings here, but must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, max_length=200)
    layout: Layout = Field(
        "auto", description="How to read x: vector (N, D), nchw, nhwc or nhw images; auto guesses "
        "by rank (2: vectors, 3: NHW, 4: NCHW when axis 1 has 1-4 channels, else NHWC).")
    value_min: float | None = Field(
        None, description="Lower end of the raw value range (default: inferred: 8-bit integers "
        "[0, 255], floats [0, 1], [-1, 1] or [0, 255] when they fit, else [min, max]).")
    value_max: float | None = Field(None, description="Upper end of the raw value range.")
    scale: Scale = Field(
        "auto", description="auto: none for vectors, symmetric for images; symmetric maps the "
        "value range to [-1, 1], unit to [0, 1]; standardize (vectors) to zero mean, unit std per "
        "coordinate; none keeps the numbers.")
    test_fraction: float = Field(DEFAULT_TEST_FRACTION, ge=0.0, lt=1.0)
    split_seed: Seed = DEFAULT_SPLIT_SEED
