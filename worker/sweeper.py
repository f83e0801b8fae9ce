"""The orphan sweep: what crashes, kills and takeovers leave behind, removed at worker start-up and
every SWEEP_INTERVAL_SECONDS (`worker.service_worker`).

- **Rows of superseded runs**: measurements and training checkpoints of a *finished* job (it has
  no current run any more) that are neither its result (`jobs.measurement_id`, `checkpoint_id`) nor
  one of its milestones, and that nothing else uses (no other job's input, no other measurement).
  Fenced writes (`worker.lease`) no longer make them; older runs did.
- **Staging files** in this host's scratch directory (`tmp/` of the local store, DATA_DIR/tmp
  with S3: an upload staged there when the API was killed with SIGKILL, a blob write cut short)
  older than ORPHAN_GRACE_SECONDS.
- **Training states** (named objects `training-state/<job>.state`, and the temporary files of
  writes cut short) of jobs that ended or no longer exist, older than ORPHAN_GRACE_SECONDS.
- **Blobs of failed inserts**: blobs in the store with no `artifacts` row, and `artifacts` rows
  that nothing refers to, older than ORPHAN_GRACE_SECONDS (the grace covers a request that wrote
  its blob and has not yet committed its row).

Everything in the store is seen through its interface (`list_blobs`, `list_objects`,
`delete_object`, `remove_blob`), so the sweep works on the local directory and on S3 alike. Ages
are `now - last-modified` in seconds; on S3 the last-modified time is the S3 server's clock, so a
clock skew between it and this host shortens or lengthens the grace by the skew.

Every step is idempotent, so several workers may sweep at once. It never touches torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, exists, not_, or_, select
from sqlalchemy.orm import Session, aliased

from core.artifacts import ArtifactStore, get_artifact_store
from core.db import session_scope
from core.settings import get_settings
from core.tables import (
    Artifact,
    Checkpoint,
    CurvePoint,
    Job,
    JobMilestone,
    JobStatus,
    Measurement,
)

log = logging.getLogger(__name__)
FINAL = (JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.canceled.value)
TRAINING_STATE_FOLDER = "training-state/"  # worker.resume.training_state_name


@dataclass
class SweepReport:
    measurements: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    staging_files: list[str] = field(default_factory=list)
    training_states: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(len(v) for v in vars(self).values())


# ---- rows of superseded runs ----
def orphan_measurement_ids(session: Session) -> list[str]:
    """Measurements of finished jobs that are neither the job's result nor a milestone's."""
    m, j = Measurement, Job
    return list(session.scalars(
        select(m.id).join(j, j.id == m.job_id).where(
            j.status.in_(FINAL),
            or_(j.measurement_id.is_(None), j.measurement_id != m.id),
            not_(exists().where(JobMilestone.job_id == m.job_id,
                                JobMilestone.measurement_id == m.id)),
        )
    ).all())


def orphan_checkpoints(session: Session) -> list[tuple[str, str]]:
    """(id, sha256) of training checkpoints of finished jobs that are neither the job's result nor
    a milestone's, and that no job takes as input and no measurement names."""
    c, j, user = Checkpoint, Job, aliased(Job)
    other_job = select(user.id).where(user.input_checkpoint_id == c.id).exists()
    measured = select(Measurement.id).where(Measurement.checkpoint_id == c.id).exists()
    rows = session.execute(
        select(c.id, c.sha256).join(j, j.id == c.job_id).where(
            c.source == "training",
            j.status.in_(FINAL),
            or_(j.checkpoint_id.is_(None), j.checkpoint_id != c.id),
            not_(exists().where(JobMilestone.job_id == c.job_id,
                                JobMilestone.checkpoint_id == c.id)),
            not_(other_job), not_(measured),
        )
    ).all()
    return [(str(i), str(s)) for i, s in rows]


def sweep_superseded_rows(store: ArtifactStore, report: SweepReport) -> None:
    with session_scope() as session:
        ids = orphan_measurement_ids(session)
        if ids:
            session.execute(delete(CurvePoint).where(CurvePoint.measurement_id.in_(ids)))
            session.execute(delete(Measurement).where(Measurement.id.in_(ids)))
        report.measurements.extend(ids)
    with session_scope() as session:  # after the measurements that named them went
        rows = orphan_checkpoints(session)
        if rows:
            session.execute(delete(Checkpoint).where(Checkpoint.id.in_([i for i, _ in rows])))
            for sha in {s for _, s in rows}:
                store.delete_if_unreferenced(session, sha)
        report.checkpoints.extend(i for i, _ in rows)


# ---- files and objects ----
def _files(directory: Path) -> Iterator[Path]:
    if directory.is_dir():
        yield from (p for p in directory.iterdir() if p.is_file())


def sweep_staging_files(store: ArtifactStore, grace: float, now: float,
                        report: SweepReport) -> None:
    """Files in this host's scratch directory last modified more than `grace` s before `now`."""
    for path in _files(store.scratch):
        try:
            old = now - path.stat().st_mtime > grace
        except FileNotFoundError:
            continue
        if old:
            path.unlink(missing_ok=True)
            report.staging_files.append(path.name)


def _job_id_of_state(name: str) -> str:
    """`<job>` of `training-state/<job>.state` (or of a temporary file's name: no job)."""
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


def sweep_training_states(store: ArtifactStore, grace: float, now: float,
                          report: SweepReport) -> None:
    """States (and their temporary files) of jobs that ended or are gone, last modified more than
    `grace` s before `now`."""
    candidates = [name for name, _size, mtime in store.list_objects(TRAINING_STATE_FOLDER)
                  if now - mtime > grace]
    if not candidates:
        return
    job_ids = {_job_id_of_state(name) for name in candidates}
    with session_scope() as session:
        active = set(session.scalars(select(Job.id).where(
            Job.id.in_(job_ids), Job.status.not_in(FINAL))).all())
    for name in candidates:
        if _job_id_of_state(name) not in active:
            store.delete_object(name)
            report.training_states.append(name)


def _referenced(session: Session, sha: str) -> bool:
    return ArtifactStore.reference_count(session, sha) > 0


def sweep_blobs(store: ArtifactStore, grace: float, now: float, report: SweepReport) -> None:
    """Rows that nothing refers to (with their blobs), then blobs without a row, both older than
    `grace` s before `now`."""
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(seconds=grace)
    with session_scope() as session:
        stale_rows = session.scalars(select(Artifact.sha256).where(
            Artifact.created_at < cutoff)).all()
        for sha in stale_rows:
            if not _referenced(session, sha) and store.delete_if_unreferenced(session, sha):
                report.blobs.append(sha)
    for sha, _size, mtime in list(store.list_blobs()):
        if now - mtime <= grace:
            continue
        with session_scope() as session:
            if session.get(Artifact, sha) is not None or _referenced(session, sha):
                continue
        store.remove_blob(sha)
        report.blobs.append(sha)


def sweep(grace_seconds: float | None = None, now: float | None = None) -> SweepReport:
    """One full sweep of the configured database and artifact store. Ages are measured from
    `now` (POSIX seconds; default the clock) against the grace (seconds; default
    ORPHAN_GRACE_SECONDS)."""
    settings = get_settings()
    grace = settings.orphan_grace_seconds if grace_seconds is None else float(grace_seconds)
    now = time.time() if now is None else float(now)
    store = get_artifact_store(settings)
    report = SweepReport()
    sweep_superseded_rows(store, report)
    sweep_staging_files(store, grace, now, report)
    sweep_training_states(store, grace, now, report)
    sweep_blobs(store, grace, now, report)
    if report.total():
        log.info("sweep: removed %d measurements, %d checkpoints, %d staging files, "
                 "%d training states, %d blobs of superseded runs and failed requests",
                 len(report.measurements), len(report.checkpoints), len(report.staging_files),
                 len(report.training_states), len(report.blobs))
    return report

