"""Datasets: create (upload / mixture / digits), list, get, delete.

Every data set is stored as one canonical `.npz` blob (members `x` float32 (N, ...) already scaled
and optional `labels` int64), written deterministically (fixed zip timestamps), so equal data give
equal hashes and share one blob. Validation happens entirely before anything is stored.
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import ProblemError, conflict, not_found, over_limit, unprocessable
from app.schemas.datasets import (
    DatasetPublic,
    DigitsCreate,
    GaussianMixtureCreate,
    UploadForm,
)
from app.services.npyfile import UploadError, read_uploaded_arrays
from app.services.pages import newest_first_page
from app.services.uploads import ReceivedUpload
from core.artifacts import ArtifactStore
from core.contract import DatasetSplit
from core.settings import Settings
from core.tables import Artifact, Dataset, Job, JobStatus, Owner
from models.data import DataError, DataSet, GaussianMixture, array_dataset, load_digits

NPZ_MEDIA_TYPE = "application/x-npz"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ACTIVE_STATUSES = (JobStatus.queued.value, JobStatus.running.value)
MAX_LABEL = 2**31 - 2  # num_classes = max label + 1 must fit a 32-bit INTEGER column
WEIGHT_SUM_TOLERANCE = 1e-6


def canonical_npz(x: np.ndarray, labels: np.ndarray | None) -> bytes:
    """Deterministic .npz bytes (stored, fixed timestamps); np.load(allow_pickle=False) reads it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        members = {"x": np.ascontiguousarray(x, dtype=np.float32)}
        if labels is not None:
            members["labels"] = np.ascontiguousarray(labels, dtype=np.int64)
        for key, arr in members.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH), member.getvalue())
    return buf.getvalue()


def load_dataset_arrays(store: ArtifactStore, sha: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, labels) of a stored canonical blob."""
    with np.load(io.BytesIO(store.read_bytes(sha)), allow_pickle=False) as npz:
        return npz["x"], (npz["labels"] if "labels" in npz.files else None)


# ---- documents ----
def dataset_public(row: Dataset, size_bytes: int | None = None) -> DatasetPublic:
    shape = [int(d) for d in row.shape]
    event = shape[1:]
    dim = 1
    for d in event:
        dim *= d
    return DatasetPublic(
        id=row.id, name=row.name, kind=row.kind, n=shape[0], shape=shape, event_shape=event,
        dim=dim, dtype=row.dtype, source_dtype=row.source_dtype, is_image=row.is_image,
        value_range=row.value_range, scaling=row.scaling, num_classes=row.num_classes,
        has_labels=bool((row.scaling or {}).get("has_labels", row.num_classes is not None)),
        split=row.split, mixture=row.mixture, sha256=row.sha256, source_sha256=row.source_sha256,
        size_bytes=size_bytes, created_at=row.created_at,
    )


def _size_of(session: Session, sha: str) -> int | None:
    art = session.get(Artifact, sha)
    return int(art.size_bytes) if art is not None else None


def public(session: Session, row: Dataset) -> DatasetPublic:
    return dataset_public(row, _size_of(session, row.sha256))


BULKY_MIXTURE_KEYS = ("weights", "means", "stds")


def mixture_summary(mixture: dict[str, Any] | None, dataset_id: str) -> dict[str, Any] | None:
    """A mixture without its (K, D) parameters, for lists: K, D, how it was made, and where the
    full parameters are (`GET /v1/datasets/{id}`)."""
    if mixture is None:
        return None
    means = mixture.get("means") or []
    out = {k: v for k, v in mixture.items() if k not in BULKY_MIXTURE_KEYS}
    out.update(n_components=len(means), dim=len(means[0]) if means else None,
               parameters=f"/v1/datasets/{dataset_id}")
    return out


def list_item(session: Session, row: Dataset, sizes: dict[str, int]) -> DatasetPublic:
    """A list entry: the document without bulky mixture parameters."""
    doc = dataset_public(row, sizes.get(row.sha256))
    return doc.model_copy(update={"mixture": mixture_summary(row.mixture, row.id)})


def sizes_of(session: Session, rows: list[Dataset]) -> dict[str, int]:
    """Blob sizes of a page of data sets, in one query."""
    shas = {r.sha256 for r in rows}
    if not shas:
        return {}
    return {sha: int(size) for sha, size in session.execute(
        select(Artifact.sha256, Artifact.size_bytes).where(Artifact.sha256.in_(shas))).all()}


# ---- creation ----
def _check_elements(data: DataSet, settings: Settings, field: str) -> None:
    n = int(data.x.numel())
    if n > settings.max_array_elements:
        raise over_limit(field, n, settings.max_array_elements, "max_array_elements")


def _split_info(data: DataSet, test_fraction: float, seed: int,
                held_out: Literal["split", "fresh_draws"]) -> dict[str, Any]:
    train, test = data.split(test_fraction, seed)
    return DatasetSplit(test_fraction=test_fraction, seed=seed, n_train=len(train),
                        n_test=len(test), held_out=held_out).model_dump()


def _store(session: Session, store: ArtifactStore, owner: Owner, data: DataSet, *,
           kind: str, name: str | None, split: dict[str, Any], scaling: dict[str, Any] | None,
           mixture: dict[str, Any] | None = None, source_sha256: str | None = None,
           source_dtype: str | None = None) -> Dataset:
    labels = None if data.labels is None else data.labels.numpy()
    blob = canonical_npz(data.x.numpy(), labels)
    sha = store.put_bytes(session, blob, NPZ_MEDIA_TYPE)
    row = Dataset(
        owner_id=owner.id, name=name, kind=kind, sha256=sha, source_sha256=source_sha256,
        shape=[int(d) for d in data.x.shape], dtype="float32", source_dtype=source_dtype,
        is_image=data.is_image,
        value_range=None if data.value_range is None else [float(v) for v in data.value_range],
        scaling={**(scaling or {}), "has_labels": labels is not None},
        num_classes=data.num_classes, split=split, mixture=mixture,
    )
    session.add(row)
    session.flush()
    return row


def _parse_form(fields: dict[str, str]) -> UploadForm:
    try:
        return UploadForm.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "form"
        raise unprocessable(f"{name}: {err['msg']}", name) from None


def create_from_upload(session: Session, store: ArtifactStore, settings: Settings, owner: Owner,
                       upload: ReceivedUpload) -> Dataset:
    """Validate the staged upload (see app.services.npyfile) and store it as a canonical blob."""
    assert upload.file_path is not None
    form = _parse_form(upload.fields)
    if (form.value_min is None) != (form.value_max is None):
        field = "value_max" if form.value_max is None else "value_min"
        raise unprocessable("give both value_min and value_max, or neither", field)
    value_range = None if form.value_min is None else (form.value_min, form.value_max)
    try:
        arrays = read_uploaded_arrays(upload.file_path, settings.max_array_elements,
                                      settings.max_upload_bytes)
    except UploadError as exc:
        raise ProblemError(exc.status, None, str(exc), exc.field) from None
    check_labels(arrays.labels)
    try:
        data = array_dataset(arrays.x, arrays.labels, layout=form.layout,
                             value_range=value_range, scale=form.scale)  # type: ignore[arg-type]
    except DataError as exc:
        msg = str(exc)
        field = "labels" if msg.startswith("labels") else (
            "value_min" if "value_range" in msg else "x")
        raise unprocessable(msg, field) from None
    check_finite(data, "x", "the data are not finite after the float32 cast (values beyond "
                 "+-3.4e38, NaN or infinity)")
    scaling = {"layout": form.layout, "scale": form.scale,
               "value_range_in": None if value_range is None else list(value_range),
               "format": arrays.format, "filename": upload.filename}
    split = _split_info(data, form.test_fraction, form.split_seed, "split")
    return _store(session, store, owner, data, kind="upload", name=form.name, split=split,
                  scaling=scaling, source_sha256=upload.sha256, source_dtype=arrays.source_dtype)


def _mixture_from_spec(spec: GaussianMixtureCreate) -> GaussianMixture:
    explicit = {k: getattr(spec, k) for k in ("weights", "means", "stds")}
    given = [k for k, v in explicit.items() if v is not None]
    if given and len(given) < 3:
        missing = next(k for k in ("weights", "means", "stds") if k not in given)
        raise unprocessable(f"give weights, means and stds together ({missing} is missing)",
                            missing)
    if given and (spec.n_components is not None or spec.dim is not None):
        field = "n_components" if spec.n_components is not None else "dim"
        raise unprocessable("give either weights/means/stds or n_components/dim, not both", field)
    try:
        if given:
            return GaussianMixture(spec.weights, spec.means, spec.stds)
        return GaussianMixture.paper(spec.n_components or 5, spec.dim or 2, spec.box, spec.scale,
                                     spec.mixture_seed)
    except (ValueError, TypeError) as exc:
        raise unprocessable(f"invalid mixture: {exc}", "means" if given else "n_components") \
            from None


def check_labels(labels: np.ndarray | None) -> None:
    """Labels are class indices 0 .. MAX_LABEL (what `num_classes`, an INTEGER, can hold)."""
    if labels is None or labels.size == 0:
        return
    high = int(labels.max())  # negative labels: models.data says they must be >= 0
    if high > MAX_LABEL:
        raise unprocessable(f"labels must be at most {MAX_LABEL} (class indices); got {high}",
                            "labels")


def check_finite(data: DataSet, field: str, detail: str) -> None:
    """422 unless every stored number is finite (x is float32 here, after the cast)."""
    if not bool(torch.isfinite(data.x).all()):
        raise unprocessable(detail, field)


def check_mixture_size(spec: GaussianMixtureCreate, settings: Settings) -> None:
    """n_components x dim within MAX_MIXTURE_SIZE, before any parameter is drawn."""
    cap = settings.max_mixture_size
    if spec.means is not None:
        k, d = len(spec.means), max((len(m) for m in spec.means), default=0)
        field = "means"
    else:
        k, d = spec.n_components or 5, spec.dim or 2
        field = "n_components"
    if k * d > cap:
        raise over_limit(field, f"{k} x {d}", cap, "max_mixture_size")


def check_mixture_values(spec: GaussianMixtureCreate) -> None:
    """Explicit parameters finite in float32, and weights that already sum to 1 (never
    renormalised silently)."""
    for name in ("means", "stds", "weights"):
        value = getattr(spec, name)
        if value is None:
            continue
        flat = [v for row in value for v in row] if name != "weights" else list(value)
        with np.errstate(over="ignore"):
            as_f32 = np.asarray(flat, dtype=np.float64).astype(np.float32)
        if not bool(np.isfinite(as_f32).all()):
            raise unprocessable(f"{name} must be finite in float32 (|value| < 3.4e38)", name)
    if spec.weights is not None and spec.weights:
        total = math.fsum(spec.weights)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise unprocessable(f"weights sum to {total!r}, not 1 (tolerance "
                                f"{WEIGHT_SUM_TOLERANCE}); they are not renormalised", "weights")


def create_mixture(session: Session, store: ArtifactStore, settings: Settings, owner: Owner,
                   spec: GaussianMixtureCreate) -> Dataset:
    if spec.n_samples > settings.max_n_samples:
        raise over_limit("n_samples", spec.n_samples, settings.max_n_samples, "max_n_samples")
    check_mixture_size(spec, settings)
    check_mixture_values(spec)
    mixture = _mixture_from_spec(spec)
    if spec.n_samples * mixture.dim > settings.max_array_elements:
        raise over_limit("n_samples", spec.n_samples * mixture.dim, settings.max_array_elements,
                         "max_array_elements")
    data = mixture.as_dataset(spec.n_samples, spec.seed)
    check_finite(data, "box" if spec.means is None else "means",
                 "the mixture's samples are not finite in float32; use a smaller box, means or "
                 "stds")
    held_out: Literal["split", "fresh_draws"] = "fresh_draws" if spec.test_fraction == 0 else "split"
    split = _split_info(data, spec.test_fraction, spec.split_seed, held_out)
    params = {**mixture.to_dict(), "n_samples": spec.n_samples, "seed": spec.seed,
              "generator": None if spec.weights is not None else {
                  "n_components": spec.n_components or 5, "dim": spec.dim or 2, "box": spec.box,
                  "scale": spec.scale, "mixture_seed": spec.mixture_seed}}
    return _store(session, store, owner, data, kind="gaussian_mixture", name=spec.name,
                  split=split, scaling={"scale": "none"}, mixture=params)


def create_digits(session: Session, store: ArtifactStore, settings: Settings, owner: Owner,
                  spec: DigitsCreate) -> Dataset:
    data = load_digits()
    _check_elements(data, settings, "kind")
    split = _split_info(data, spec.test_fraction, spec.split_seed, "split")
    scaling = {"layout": "nhw", "scale": "symmetric", "value_range_in": [0.0, 16.0],
               "source": "sklearn.datasets.load_digits"}
    return _store(session, store, owner, data, kind="digits", name=spec.name or "digits",
                  split=split, scaling=scaling)


# ---- queries ----
def get_owned(session: Session, owner: Owner, dataset_id: str, field: str | None = None
              ) -> Dataset:
    row = session.get(Dataset, dataset_id)
    if row is None or row.owner_id != owner.id:
        raise not_found("dataset", dataset_id, field)
    return row


def list_owned(session: Session, owner: Owner, limit: int, offset: int
               ) -> tuple[list[Dataset], int]:
    return newest_first_page(session, Dataset, [Dataset.owner_id == owner.id], limit, offset)


def delete_owned(session: Session, store: ArtifactStore, owner: Owner, dataset_id: str) -> None:
    """Delete a dataset: 409 while a queued/running job uses it; the blob goes when unreferenced.

    Finished jobs keep their resolved request (with the dataset id and data hash) but lose the link.
    """
    row = get_owned(session, owner, dataset_id)
    active = session.scalars(
        select(Job.id).where(Job.dataset_id == row.id, Job.status.in_(ACTIVE_STATUSES)).limit(5)
    ).all()
    if active:
        raise conflict(f"dataset {row.id} is used by active jobs {list(active)}; cancel them or "
                       "wait until they finish", jobs=list(active))
    session.execute(update(Job).where(Job.dataset_id == row.id).values(dataset_id=None))
    sha = row.sha256
    session.delete(row)
    session.flush()
    store.delete_if_unreferenced(session, sha)

