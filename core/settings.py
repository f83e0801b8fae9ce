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
    max_archive_members: int = Field(64, description="Most members of an uploaded pipeline archive (.zip/.tar).")
    max_archive_unpacked_bytes: int = Field(
        512 * MiB, description="Largest unpacked size of an uploaded pipeline archive, bytes (413 above).")
    max_model_parameters: int = Field(
        64_000_000, description="Most parameters of an uploaded diffusers UNet, checked before allocation.")

    # ---- jobs ----
    job_timeout_seconds: int = Field(7 * 24 * 3600, description="RQ job timeout (RQ's 180 s default kills training).")
    progress_interval_seconds: float = Field(1.0, description="Least time between progress writes to the DB.")
    reconcile_interval_seconds: float = Field(30.0, description="How often the worker re-enqueues lost jobs.")
    worker_device: str | None = Field(None, description="Force the worker's device (cpu, cuda, cuda:1).")

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
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()


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
