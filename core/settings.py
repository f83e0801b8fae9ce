"""One settings class, read once from the environment (and `make run VAR=..`), overridable in tests."""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Service configuration; every field can be set by the upper-case environment variable."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root for the SQLite file, artifacts, Redis socket.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in DATA_DIR.")
    redis_url: str | None = Field(None, description="Redis URL; default the bundled server's socket.")
    artifact_dir: Path | None = Field(None, description="Content-addressed blobs; default DATA_DIR/artifacts.")
    artifact_url: str | None = Field(
        None, description="s3://bucket/prefix: blobs in S3 (the bucket must exist); unset: ARTIFACT_DIR.")
    aws_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, Ceph, R2); unset: AWS.")
    aws_default_region: str | None = Field(None, description="S3 region (boto3's default when unset).")
    artifact_presigned_downloads: bool = Field(
        False, description="S3 only: downloads answer 307 to a presigned URL instead of streaming.")
    artifact_presign_seconds: int = Field(300, ge=1, description="Lifetime of a presigned download URL.")
    artifact_presign_endpoint_url: str | None = Field(
        None, description="Endpoint clients reach S3 at, for presigned URLs (default AWS_ENDPOINT_URL).")
    blob_cache_dir: Path | None = Field(None, description="Worker blob cache; default DATA_DIR/blob-cache.")
    blob_cache_bytes: int = Field(8 * 1024 * MiB, ge=0,
                                  description="Size cap of the worker blob cache (LRU eviction); 0: off.")
    host: str = "127.0.0.1"
    port: int = 8000

    # ---- limits (over a cap: 413 for bytes, 422 naming the cap otherwise) ----
    max_upload_bytes: int = Field(256 * MiB, description="Largest accepted upload, bytes.")
    max_array_elements: int = Field(100_000_000, description="Largest array, in elements.")
    max_n_samples: int = Field(1_000_000, description="Largest n_samples (mixtures, measurements).")
    max_epochs: int = Field(10_000, description="Largest number of training epochs.")
    max_curve_points: int = Field(4096, description="Largest number of curve points n_times.")
    max_sample_count: int = Field(10_000, description="Largest number of generated samples per job.")
    max_sweep_jobs: int = Field(256, description="Largest number of grid points (train jobs) of a sweep.")
    max_network_parameters: int = Field(
        50_000_000, description="Largest network, in trainable parameters (counted before enqueue).")
    max_network_layers: int = Field(
        64, description="Deepest network: MLP hidden layers, or U-Net levels x blocks per level.")
    max_mixture_size: int = Field(
        100_000, description="Largest Gaussian mixture, n_components x dim.")
    max_checkpoint_tensors: int = Field(
        4096, description="Most tensors in an uploaded checkpoint (read from its header).")
    max_json_body_bytes: int = Field(4 * MiB, description="Largest JSON request body (413 above).")
    max_queued_jobs_per_owner: int = Field(
        100, description="Most queued submissions per owner (429 + Retry-After above); "
        "a sweep counts as one.")
    sweep_jobs_in_flight: int = Field(
        0, ge=0, description="Most jobs of one sweep on the queue or running at once (the sweep "
        "feeds the rest in grid order as they end); 0: one per live worker of its queue.")

    # ---- load ----
    max_in_flight_requests: int = Field(
        64, description="Requests served at once; more wait for a slot (/healthz is exempt).")
    load_shed_wait_seconds: float = Field(
        20.0, ge=0, description="Longest wait for a slot; then 503 + Retry-After.")
    max_waiting_requests: int = Field(
        4096, ge=0, description="Requests waiting for a slot at most; more get an immediate "
        "503 + Retry-After.")
    db_pool_size: int = Field(
        40, description="Database connections kept per process (opened as needed): the API's 40 "
        "threads each hold one at most, so none is opened and closed per request under load.")
    db_max_overflow: int = Field(
        10, description="Extra connections beyond DB_POOL_SIZE, closed again after use.")
    db_pool_timeout_seconds: float = Field(
        5.0, description="Wait for a free connection, then 503 + Retry-After.")
    retry_after_seconds: int = Field(2, description="Retry-After of load-shedding 503s.")
    max_archive_members: int = Field(64, description="Most members of an uploaded pipeline archive (.zip/.tar).")
    max_archive_unpacked_bytes: int = Field(
        512 * MiB, description="Largest unpacked size of an uploaded pipeline archive, bytes (413 above).")

    # ---- jobs ----
    job_timeout_seconds: int = Field(7 * 24 * 3600, description="RQ job timeout (RQ's 180 s default kills training).")
    progress_interval_seconds: float = Field(1.0, description="Least time between progress writes to the DB.")
    reconcile_interval_seconds: float = Field(
        10.0, description="How often each worker's reconciler looks for lost jobs (its own clock, busy or idle).")
    lease_seconds: float = Field(
        30.0, description="A running job (and a worker) renews its lease every third of this; a lease "
                          "older than this is expired. Takeover bound: LEASE_SECONDS + RECONCILE_INTERVAL_SECONDS.")
    orphan_grace_seconds: float = Field(
        3600.0, description="Staging files and unreferenced blobs older than this are swept.")
    sweep_interval_seconds: float = Field(
        900.0, description="How often each worker sweeps orphans (also once at start-up).")
    training_state_interval_seconds: float = Field(
        300.0, gt=0, description="Wall-clock time between saved training states (resume points).")
    worker_device: str | None = Field(None, description="Force the worker's device (cpu, cuda, cuda:1).")
    worker_torch_threads: int = Field(0, ge=0, description="CPU threads of each job's torch ops "
                                      "(0: torch's default, one per core); set it when several "
                                      "workers share a host.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'neural-entropy.sqlite3').resolve()}"

    @property
    def resolved_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"unix://{(self.data_dir / 'redis.sock').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        url = (self.artifact_url or "").strip()
        if url.startswith("file://"):
            return Path(url[len("file://"):]).resolve()
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_blob_cache_dir(self) -> Path:
        return (self.blob_cache_dir or self.data_dir / "blob-cache").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call `get_settings.cache_clear()` after changing env."""
    return Settings()


def code_version() -> str:
    """Installed version of this package (recorded with every result)."""
    try:
        return metadata.version("neural-entropy")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"
