"""The orphan sweep removes what superseded runs, killed requests and failed inserts left behind,
and nothing that is in use — on both artifact stores (the local directory and S3 on the moto
server). Ages: a sweep's `now` set twice the grace ahead stands in for waiting (an S3 object's
last-modified time cannot be set back)."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

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
    Owner,
    utcnow,
)
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request
from worker.resume import training_state_name
from worker.sweeper import sweep

GRACE = 600.0


def _checkpoint(session, owner: Owner, job_id: str, epoch: int, payload: bytes) -> Checkpoint:
    sha = get_artifact_store().put_bytes(session, payload, "application/octet-stream")
    row = Checkpoint(owner_id=owner.id, sha256=sha, size_bytes=len(payload), config={},
                     source="training", job_id=job_id, epoch=epoch)
    session.add(row)
    session.flush()
    return row


def _measurement(session, owner: Owner, job_id: str, checkpoint_id: str | None) -> Measurement:
    row = Measurement(owner_id=owner.id, job_id=job_id, checkpoint_id=checkpoint_id, epoch=1,
                      summary={}, reproducibility={})
    session.add(row)
    session.flush()
    session.add(CurvePoint(measurement_id=row.id, idx=0, s=0.0, rate=0.0, rate_stderr=0.0,
                           cumulative=0.0))
    session.flush()
    return row


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_rows_of_superseded_runs_go_and_results_stay(service_env, artifact_backend: str) -> None:
    with session_scope() as s:
        owner = make_owner(s)
        ds = make_mixture_dataset(s, owner, n=40)
        job = make_job(s, owner, train_request(ds, milestones=[1]), attempts=2,
                       status=JobStatus.succeeded.value)
        kept_ckpt = _checkpoint(s, owner, job.id, 1, b"milestone")
        kept_meas = _measurement(s, owner, job.id, kept_ckpt.id)
        final_ckpt = _checkpoint(s, owner, job.id, 2, b"final")
        final_meas = _measurement(s, owner, job.id, final_ckpt.id)
        s.add(JobMilestone(job_id=job.id, epoch=1, checkpoint_id=kept_ckpt.id,
                           measurement_id=kept_meas.id))
        job.checkpoint_id, job.measurement_id = final_ckpt.id, final_meas.id
        # what a superseded first attempt wrote for the same milestone, before fencing
        stale_ckpt = _checkpoint(s, owner, job.id, 1, b"stale")
        stale_meas = _measurement(s, owner, job.id, stale_ckpt.id)
        # a stale checkpoint that a user has since measured is in use: it stays
        used_ckpt = _checkpoint(s, owner, job.id, 1, b"used")
        user_job = make_job(s, owner, train_request(ds), status=JobStatus.succeeded.value)
        user_job.input_checkpoint_id = used_ckpt.id
        # a running job's extra rows belong to a live run: they stay
        running = make_job(s, owner, train_request(ds), status=JobStatus.running.value,
                           attempts=1)
        live_ckpt = _checkpoint(s, owner, running.id, 1, b"live")
        live_meas = _measurement(s, owner, running.id, live_ckpt.id)
        ids = {k: v.id for k, v in dict(
            kept_ckpt=kept_ckpt, kept_meas=kept_meas, final_ckpt=final_ckpt,
            final_meas=final_meas, stale_ckpt=stale_ckpt, stale_meas=stale_meas,
            used_ckpt=used_ckpt, live_ckpt=live_ckpt, live_meas=live_meas).items()}
        stale_sha = stale_ckpt.sha256
        assert user_job.id
    store = get_artifact_store()
    assert store.kind == artifact_backend

    report = sweep(GRACE)
    assert report.measurements == [ids["stale_meas"]]
    assert report.checkpoints == [ids["stale_ckpt"]]
    with session_scope() as s:
        assert s.get(Measurement, ids["stale_meas"]) is None
        assert s.get(Checkpoint, ids["stale_ckpt"]) is None
        assert s.scalar(select(func.count()).select_from(CurvePoint).where(
            CurvePoint.measurement_id == ids["stale_meas"])) == 0
        for key in ("kept_ckpt", "final_ckpt", "used_ckpt", "live_ckpt"):
            assert s.get(Checkpoint, ids[key]) is not None, key
        for key in ("kept_meas", "final_meas", "live_meas"):
            assert s.get(Measurement, ids[key]) is not None, key
        assert s.get(Artifact, stale_sha) is None
    assert not store.exists(stale_sha)
    assert sweep(GRACE).total() == 0  # nothing left to do


def _put_without_row(store: ArtifactStore, data: bytes) -> str:
    """Write blob `data` with the backend's primitive only (no `artifacts` row, no clean-up on
    rollback): what a request killed with SIGKILL between the blob and the row leaves."""
    sha = hashlib.sha256(data).hexdigest()
    with store.staging_file() as staged:
        staged.write_bytes(data)
        store._put_file(sha, staged, len(data), "x/y", move=False)
    return sha


def test_staging_files_and_unreferenced_blobs_older_than_the_grace_go(
        service_env, artifact_backend: str) -> None:
    store = get_artifact_store()
    assert store.kind == artifact_backend
    with session_scope() as s:
        owner = make_owner(s)
        ds = make_mixture_dataset(s, owner, n=40)
        used = ds.sha256
        unreferenced = store.put_bytes(s, b"a blob whose dataset insert failed", "x/y")
        young_unreferenced = store.put_bytes(s, b"a blob being committed", "x/y")
        s.execute(Artifact.__table__.update().where(Artifact.sha256 == unreferenced)
                  .values(created_at=utcnow() - timedelta(seconds=2 * GRACE)))
    rowless = _put_without_row(store, b"rolled back")
    # an upload staged in this host's scratch directory when the API was killed with SIGKILL,
    # and one in progress
    old_stage = store.tmp_dir / "tmpabc.upload"
    old_stage.write_bytes(b"partial upload")
    new_stage = store.tmp_dir / "tmpdef.upload"
    new_stage.write_bytes(b"upload in progress")
    _age(old_stage, 2 * GRACE)

    # now: only what is older than the grace goes (the row dated back, the staged file aged)
    report = sweep(GRACE)
    assert report.staging_files == [old_stage.name]
    assert report.blobs == [unreferenced]
    assert not old_stage.exists() and new_stage.exists()
    assert not store.exists(unreferenced)
    assert store.exists(used) and store.exists(young_unreferenced) and store.exists(rowless)
    with session_scope() as s:
        assert s.get(Artifact, unreferenced) is None
        assert s.get(Artifact, young_unreferenced) is not None

    # twice the grace later: the blob without a row and the row nothing took up go; in use stays
    report = sweep(GRACE, now=time.time() + 2 * GRACE)
    assert sorted(report.blobs) == sorted([young_unreferenced, rowless])
    assert report.staging_files == [new_stage.name]
    assert not store.exists(young_unreferenced) and not store.exists(rowless)
    assert store.exists(used) and [sha for sha, _, _ in store.list_blobs()] == [used]
    with session_scope() as s:
        assert s.get(Artifact, young_unreferenced) is None
        assert s.get(Artifact, used) is not None


def test_training_states_of_ended_and_gone_jobs_go_once_older_than_the_grace(
        service_env, artifact_backend: str) -> None:
    with session_scope() as s:
        owner = make_owner(s)
        ds = make_mixture_dataset(s, owner, n=40)
        ended = make_job(s, owner, train_request(ds), status=JobStatus.failed.value).id
        running = make_job(s, owner, train_request(ds), status=JobStatus.running.value).id
        queued = make_job(s, owner, train_request(ds), status=JobStatus.queued.value).id
    store = get_artifact_store()
    assert store.kind == artifact_backend
    names = {job_id: training_state_name(job_id)
             for job_id in (ended, running, queued, "job_gone")}
    for job_id, name in names.items():
        store.put_object(name, f"state of {job_id}".encode())

    # fresh states stay whoever they belong to (an ended job's own clean-up may still come)
    assert sweep(GRACE).training_states == []
    assert sorted(n for n, _, _ in store.list_objects("training-state/")) == sorted(names.values())

    # twice the grace later: those of the ended and the vanished job go, the live jobs' stay
    report = sweep(GRACE, now=time.time() + 2 * GRACE)
    assert sorted(report.training_states) == sorted([names[ended], names["job_gone"]])
    assert store.get_object(names[ended]) is None and store.get_object(names["job_gone"]) is None
    for job_id in (running, queued):
        assert store.get_object(names[job_id]) == f"state of {job_id}".encode()
    assert get_settings().orphan_grace_seconds == 3600.0  # the documented default
    with session_scope() as s:
        assert s.get(Job, running).status == "running"
