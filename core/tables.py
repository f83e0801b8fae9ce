"""ORM tables (SQLAlchemy 2). The database row, not Redis, is the truth about every job.

Ids are strings with a type prefix (`ds_...`, `job_...`); JSON columns hold the fully resolved
request and result documents so that every result can be reproduced.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A fresh id such as `job_3f2a...` (prefix + 32 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


class JobType(enum.StrEnum):
    train = "train"
    measure = "measure"
    sample = "sample"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class Owner(Base):
    """An owner of data, checkpoints and jobs; `name` is unique (`python -m app.cli create-key`)."""

    __tablename__ = "owners"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("own"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key, stored as the sha256 hex of the secret; `prefix` is shown to identify it."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdempotencyKey(Base):
    """The first answer to a POST sent with `Idempotency-Key`: a retry with the same key by the
    same owner gets the same resource and status code. Stored in the same transaction as the
    resource it created, so it exists exactly when that resource does."""

    __tablename__ = "idempotency_keys"
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"),
                                          primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(100))  # "POST /v1/jobs"
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 of body
    resource_id: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Artifact(Base):
    """A content-addressed blob in the artifact store (ARTIFACT_DIR/ab/abcdef...)."""

    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    """A data set: x (N, ...) float32 already scaled, optional labels; stored as a canonical .npz blob."""

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    kind: Mapped[str] = mapped_column(String(40))  # upload | gaussian_mixture | digits
    sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), index=True)
    source_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the uploaded bytes
    shape: Mapped[list[Any]] = mapped_column(JsonType)  # [N, ...]
    dtype: Mapped[str] = mapped_column(String(20))  # dtype of the stored x (float32)
    source_dtype: Mapped[str | None] = mapped_column(String(20), nullable=True)
    is_image: Mapped[bool] = mapped_column(Boolean, default=False)
    value_range: Mapped[list[Any] | None] = mapped_column(JsonType, nullable=True)  # after scaling
    scaling: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)  # rule applied
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    split: Mapped[dict[str, Any]] = mapped_column(JsonType)  # {test_fraction, seed, n_train, n_test}
    mixture: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)  # weights/means/stds
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    """Network weights (safetensors, config in its metadata), uploaded or produced by training."""

    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ckpt"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)  # architecture, parametrization, process...
    source: Mapped[str] = mapped_column(String(20))  # upload | training
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A train / measure / sample job; `request` is the fully resolved request document."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(20))  # JobType
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued.value, index=True)
    queue: Mapped[str] = mapped_column(String(20), default="cpu")  # gpu | cpu
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), nullable=True, index=True)
    input_checkpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("checkpoints.id"), nullable=True, index=True
    )
    request: Mapped[dict[str, Any]] = mapped_column(JsonType)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    convergence: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)  # train jobs
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # a sweep's queued job its sweep has not yet put on RQ (`core.sweep_feed`); only while queued
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    rq_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    device: Mapped[str | None] = mapped_column(String(40), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    measurement_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # final
    checkpoint_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # final (produced)
    samples_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sample jobs (.npy)
    samples_png_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    compute_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # worker's own time
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # its sweep, if any (deleting a sweep sets it to NULL first: app.services.sweeps)
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"), nullable=True, index=True)

    milestones: Mapped[list[JobMilestone]] = relationship(
        back_populates="job", order_by="JobMilestone.epoch", cascade="all, delete-orphan"
    )


class Sweep(Base):
    """A grid of train jobs submitted as one request; its status is derived from its jobs'."""

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("swp"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JsonType)  # {base, grid, subset_seed, ...}
    # one entry per job, in grid order: {job_id, n_train, seed, process, network} (labels)
    points: Mapped[list[Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class JobMilestone(Base):
    __tablename__ = "job_milestones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    measurement_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    job: Mapped[Job] = relationship(back_populates="milestones")


class Measurement(Base):
    """A neural-entropy measurement; `summary` holds neural_entropy, total_entropy, density_bound,
    data_entropy, t_min, t_max; `reproducibility` everything needed to reproduce it."""

    __tablename__ = "measurements"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("meas"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonType)
    reproducibility: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    points: Mapped[list[CurvePoint]] = relationship(
        back_populates="measurement", order_by="CurvePoint.idx", cascade="all, delete-orphan"
    )


class CurvePoint(Base):
    """One row of an entropy-production curve (nats per unit s; cumulative in nats)."""

    __tablename__ = "curve_points"
    measurement_id: Mapped[str] = mapped_column(
        ForeignKey("measurements.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    s: Mapped[float] = mapped_column(Float)
    rate: Mapped[float] = mapped_column(Float)
    rate_stderr: Mapped[float] = mapped_column(Float)
    cumulative: Mapped[float] = mapped_column(Float)
    cumulative_stderr: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_rate: Mapped[float | None] = mapped_column(Float, nullable=True)  # S_tot columns when known
    total_rate_stderr: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_cumulative: Mapped[float | None] = mapped_column(Float, nullable=True)
    measurement: Mapped[Measurement] = relationship(back_populates="points")


class WorkerRow(Base):
    """A live (or recently live) worker: its lease, renewed every LEASE_SECONDS / 3 by the
    worker's parent process; a row whose `heartbeat_at` is older than LEASE_SECONDS is dead."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # the RQ worker name
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[Any]] = mapped_column(JsonType)  # e.g. ["gpu", "cpu"]
    device: Mapped[str] = mapped_column(String(200))  # "cpu", "cuda (NVIDIA H200)"
    state: Mapped[str] = mapped_column(String(20))  # idle | busy
    current_job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


Index("ix_jobs_owner_status", Job.owner_id, Job.status)
Index("ix_owners_name", Owner.name, unique=True)
