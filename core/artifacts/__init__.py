"""The artifact store: content-addressed blobs (data sets, checkpoints, samples) and named internal
objects (training states), behind one interface (`base.ArtifactStore`) with two backends:

- `local.LocalArtifactStore`: ARTIFACT_DIR (default DATA_DIR/artifacts), the embedded default;
- `s3.S3ArtifactStore`: `ARTIFACT_URL=s3://bucket/prefix` (endpoint AWS_ENDPOINT_URL).

`get_artifact_store(settings)` returns the one the settings name. Used by the API (uploads,
downloads) and by the worker (inputs through its blob cache, checkpoints, samples, states).
"""

from __future__ import annotations

from core.artifacts.base import (
    CHUNK_BYTES,
    ArtifactCorrupt,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreError,
    check_sha,
    hash_file,
)
from core.artifacts.local import LocalArtifactStore
from core.artifacts.s3 import S3ArtifactStore, parse_s3_url
from core.settings import Settings, get_settings

__all__ = [
    "CHUNK_BYTES", "ArtifactCorrupt", "ArtifactNotFound", "ArtifactStore", "ArtifactStoreError",
    "LocalArtifactStore", "S3ArtifactStore", "check_sha", "get_artifact_store", "hash_file",
    "parse_s3_url", "store_for",
]

_STORES: dict[tuple[object, ...], ArtifactStore] = {}


def store_for(settings: Settings) -> ArtifactStore:
    """A new store for `settings`: S3 when ARTIFACT_URL is s3://..., else the local directory."""
    url = (settings.artifact_url or "").strip()
    if url.startswith("s3://"):
        bucket, prefix = parse_s3_url(url)
        return S3ArtifactStore(
            bucket, prefix, settings.data_dir.resolve() / "tmp",
            endpoint_url=settings.aws_endpoint_url, region=settings.aws_default_region,
            presign_seconds=(settings.artifact_presign_seconds
                             if settings.artifact_presigned_downloads else None),
            presign_endpoint_url=settings.artifact_presign_endpoint_url)
    if url and not url.startswith("file://"):
        raise ValueError(f"ARTIFACT_URL must be s3://bucket/prefix or file:///path, got {url!r}")
    root = settings.resolved_artifact_dir
    root.mkdir(parents=True, exist_ok=True)
    return LocalArtifactStore(root)


def get_artifact_store(settings: Settings | None = None) -> ArtifactStore:
    """The store of `settings` (or the process's), made once per distinct configuration."""
    settings = settings or get_settings()
    key = (settings.artifact_url, str(settings.resolved_artifact_dir), str(settings.data_dir),
           settings.aws_endpoint_url, settings.aws_default_region,
           settings.artifact_presigned_downloads, settings.artifact_presign_seconds,
           settings.artifact_presign_endpoint_url)
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = store_for(settings)
    elif isinstance(store, LocalArtifactStore):
        store.root.mkdir(parents=True, exist_ok=True)
    return store
