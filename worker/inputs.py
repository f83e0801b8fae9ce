"""Loading a job's inputs: dataset blobs (canonical .npz) and checkpoints from the artifact store,
through the worker's blob cache (`worker.blob_cache`).

Blobs are read with `allow_pickle=False` and checkpoints through `models.checkpoints.io`
(safetensors, never unpickled), so even a tampered artifact store cannot make the worker run code.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from core.artifacts import ArtifactCorrupt, ArtifactNotFound
from core.contract import DatasetSplit
from core.tables import Checkpoint, Dataset
from models.checkpoints.config import CheckpointConfig
from models.checkpoints.io import load_model, read_checkpoint
from models.data import DataSet, GaussianMixture, is_eight_bit
from models.parametrization import EntropyMatchingModel
from worker.blob_cache import worker_blob_cache
from worker.errors import JobInputError


def read_artifact(sha256: str, what: str) -> bytes:
    """The blob's bytes (sha256 checked; through the worker's blob cache when the store is
    remote), or JobInputError naming what was missing or corrupt."""
    try:
        return worker_blob_cache().read_bytes(sha256)
    except ArtifactNotFound:
        raise JobInputError(
            f"the {what} file ({sha256[:12]}...) is missing from the artifact store"
        ) from None
    except ArtifactCorrupt:
        raise JobInputError(
            f"the {what} file ({sha256[:12]}...) in the artifact store is corrupt"
        ) from None


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset row's data: all samples, the deterministic split, the mixture if known."""

    dataset_id: str
    sha256: str
    data: DataSet
    train: DataSet
    test: DataSet
    mixture: GaussianMixture | None
    split: DatasetSplit
    eight_bit_range: tuple[float, float] | None  # scaled range of 8-bit source data
    source_dtype: str | None = None  # dtype of the uploaded array ("uint8": 8-bit levels)

    def part(self, name: str) -> DataSet:
        """The `train` or `test` part ("test" falls back to all data when the split left none)."""
        if name == "train":
            return self.train
        if name == "test":
            return self.test if len(self.test) > 0 else self.data
        if name == "all":
            return self.data
        raise JobInputError(f"unknown split {name!r}; expected 'test', 'train' or 'all'")

    def with_train_subset(self, n: int | None, seed: int) -> LoadedDataset:
        """The same dataset training on the nested subset of `n` of its training points
        (`models.data.DataSet.nested_subset`; class-balanced with labels); None keeps them all.
        The held-out part, the full data and the mixture stay as they are."""
        if n is None:
            return self
        if not 1 <= n <= len(self.train):
            raise JobInputError(f"n_train = {n} but dataset {self.dataset_id} has "
                                f"{len(self.train)} training points")
        return dataclasses.replace(self, train=self.train.nested_subset(n, seed))


def dataset_from_npz(blob: bytes, row: Dataset) -> DataSet:
    """The canonical blob (`x` float32 (N, ...) scaled, optional int64 `labels`) as a DataSet."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            x = np.asarray(npz["x"], dtype=np.float32)
            labels = np.asarray(npz["labels"], dtype=np.int64) if "labels" in npz.files else None
    except (KeyError, ValueError, OSError) as exc:
        raise JobInputError(f"dataset {row.id} could not be read: {exc}") from None
    value_range = tuple(float(v) for v in row.value_range) if row.value_range else None
    return DataSet(
        x=torch.from_numpy(np.ascontiguousarray(x)),
        labels=None if labels is None else torch.from_numpy(labels),
        value_range=value_range,  # type: ignore[arg-type]
        num_label_values=row.num_classes,
    )


def load_dataset(session: Session, dataset_id: str | None) -> LoadedDataset:
    """Load a dataset row and its blob; split it as the row records (`test_fraction`, `seed`)."""
    if not dataset_id:
        raise JobInputError("the job names no dataset")
    row = session.get(Dataset, dataset_id)
    if row is None:
        raise JobInputError(f"dataset {dataset_id} no longer exists")
    data = dataset_from_npz(read_artifact(row.sha256, "dataset"), row)
    split = DatasetSplit.model_validate(row.split)
    train, test = data.split(split.test_fraction, split.seed)
    mixture = None
    if row.mixture:
        mixture = GaussianMixture(row.mixture["weights"], row.mixture["means"], row.mixture["stds"])
    return LoadedDataset(row.id, row.sha256, data, train, test, mixture, split,
                         eight_bit_range=_eight_bit_range(row), source_dtype=row.source_dtype)


def _eight_bit_range(row: Dataset) -> tuple[float, float] | None:
    """The scaled value range of image data that came as 8-bit levels (for bits/dim offsets)."""
    scaling = row.scaling or {}
    source = scaling.get("value_range_in")
    eight_bit = is_eight_bit(row.source_dtype) or (
        source is not None and [float(v) for v in source] == [0.0, 255.0])
    if not (row.is_image and eight_bit and row.value_range):
        return None
    return (float(row.value_range[0]), float(row.value_range[1]))


@dataclass(frozen=True)
class LoadedCheckpoint:
    checkpoint_id: str
    sha256: str
    config: CheckpointConfig
    model: EntropyMatchingModel  # eval mode on `device`
    epoch: int | None


def load_checkpoint(session: Session, checkpoint_id: str | None, device: str) -> LoadedCheckpoint:
    """Read, validate and build the checkpoint's EntropyMatchingModel on `device`."""
    if not checkpoint_id:
        raise JobInputError("the job names no checkpoint")
    row = session.get(Checkpoint, checkpoint_id)
    if row is None:
        raise JobInputError(f"checkpoint {checkpoint_id} no longer exists")
    blob = read_artifact(row.sha256, "checkpoint")
    # the row's config is the validated, merged one (an upload's `config` may override the file)
    config, tensors = read_checkpoint(blob, max_bytes=max(len(blob), 1),
                                      overrides=row.config or None)
    model = load_model((config, tensors), device=device)
    return LoadedCheckpoint(row.id, row.sha256, config, model, row.epoch)


def to_model_range(loaded: LoadedDataset, model_range: tuple[float, float]
                   ) -> tuple[LoadedDataset, dict[str, Any]]:
    """The dataset mapped affinely from its stored value range onto `model_range` (a diffusers
    UNet takes images in [-1, 1]: data stored as [0, 1] or [0, 255] are mapped there; 8-bit
    data kept unscaled without a recorded range are taken as [0, 255]), and the
    record {data, model, scale, shift} of the map x_model = scale * x + shift."""
    src = loaded.data.value_range
    if src is None and is_eight_bit(loaded.source_dtype):
        src = (0.0, 255.0)  # 8-bit levels kept unscaled (scale "none")
    if src is None:
        raise JobInputError(f"dataset {loaded.dataset_id} records no value range, so it cannot be mapped to "
                            f"the model's range {list(model_range)}; upload it with value_min/value_max")
    lo, hi = float(src[0]), float(src[1])
    a, b = float(model_range[0]), float(model_range[1])
    scale = (b - a) / (hi - lo)
    shift = a - lo * scale
    target = (a, b)

    def mapped(ds: DataSet) -> DataSet:
        if scale == 1.0 and shift == 0.0:
            return dataclasses.replace(ds, value_range=target)
        return dataclasses.replace(ds, x=ds.x * scale + shift, value_range=target)

    out = dataclasses.replace(loaded, data=mapped(loaded.data), train=mapped(loaded.train),
                              test=mapped(loaded.test),
                              eight_bit_range=None if loaded.eight_bit_range is None else target)
    return out, {"data": [lo, hi], "model": [a, b], "scale": scale, "shift": shift}


def check_fits(event_shape: tuple[int, ...], data: DataSet) -> None:
    """JobInputError when the data's sample shape differs from what the network takes."""
    if tuple(event_shape) != tuple(data.event_shape):
        raise JobInputError(
            f"the dataset's samples have shape {list(data.event_shape)} but the network takes "
            f"{list(event_shape)}"
        )
