"""`run_job` on a real database with tiny models: what train, measure and sample jobs leave."""

from __future__ import annotations

import io
import math
import threading
import time

import numpy as np
import pytest
from sqlalchemy import select

from core.artifacts import get_artifact_store
from core.db import session_scope
from core.tables import Checkpoint, CurvePoint, Job, Measurement, Owner
from tests.worker.seed import (
    TINY_MEASUREMENT,
    make_job,
    make_mixture_dataset,
    make_owner,
    train_request,
)
from worker.jobs import run_job


def _submit(request_for, **columns) -> str:
    """A queued job for a fresh owner and mixture dataset; `request_for(dataset)` builds it."""
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner)
        return make_job(session, owner, request_for(ds), **columns).id


def _job(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        _ = job.milestones
        session.expunge_all()
        return job


def _measurement(mid: str) -> tuple[Measurement, list[CurvePoint]]:
    with session_scope() as session:
        m = session.get(Measurement, mid)
        points = list(m.points)
        session.expunge_all()
        return m, points


def test_train_job_leaves_measurement_curve_checkpoint_and_milestones(service_env) -> None:
    job_id = _submit(lambda ds: train_request(ds, epochs=2, milestones=[1]))
    assert run_job(job_id) == "succeeded"
    job = _job(job_id)
    assert job.status == "succeeded", job.error
    assert job.error is None and job.device == "cpu" and job.worker_name
    assert job.started_at <= job.finished_at and job.compute_seconds > 0
    assert job.progress["phase"] == "done" and job.progress["fraction"] == 1.0

    m, points = _measurement(job.measurement_id)
    ne = m.summary["neural_entropy"]
    assert math.isfinite(ne["nats"]) and ne["stderr"] > 0
    assert ne["bits"] == pytest.approx(ne["nats"] / math.log(2))
    assert ne["bits_per_dim"] == pytest.approx(ne["bits"] / 2)
    assert m.summary["total_entropy"]["nats"] > 0  # a mixture: S_tot with the exact score
    assert m.summary["dim"] == 2 and m.summary["t_max"] == pytest.approx(1.0)
    assert len(points) >= TINY_MEASUREMENT["n_times"]
    assert [p.idx for p in points] == list(range(len(points)))
    assert all(p.total_rate is not None for p in points)
    assert points[-1].cumulative == pytest.approx(ne["nats"], rel=1e-6)
    repro = m.reproducibility
    assert repro["dataset_id"] == job.dataset_id and repro["epoch"] == 2
    assert repro["process"]["kind"] == "vp" and repro["network"]["arch"] == "mlp"
    assert repro["checkpoint_id"] == job.checkpoint_id and repro["code_version"]

    assert [ms.epoch for ms in job.milestones] == [1]
    milestone = job.milestones[0]
    assert milestone.checkpoint_id and milestone.measurement_id
    assert milestone.checkpoint_id != job.checkpoint_id
    with session_scope() as session:
        ckpts = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        assert sorted(c.epoch for c in ckpts) == [1, 2]
        final = session.get(Checkpoint, job.checkpoint_id)
        assert final.source == "training" and final.config["event_shape"] == [2]
    from models.checkpoints.io import load_model

    model = load_model(get_artifact_store().read_bytes(final.sha256))
    assert model is not None


def test_milestone_at_the_last_epoch_is_the_final_result(service_env) -> None:
    job_id = _submit(lambda ds: train_request(ds, epochs=1, milestones=[1]))
    assert run_job(job_id) == "succeeded"
    job = _job(job_id)
    assert job.checkpoint_id == job.milestones[0].checkpoint_id
    assert job.measurement_id == job.milestones[0].measurement_id


def test_measure_job_of_a_trained_checkpoint_reproduces_its_measurement(service_env) -> None:
    train_id = _submit(lambda ds: train_request(ds, epochs=1))
    assert run_job(train_id) == "succeeded"
    trained = _job(train_id)
    with session_scope() as session:
        src = session.get(Job, train_id)
        owner = session.get(Owner, src.owner_id)
        measure = make_job(session, owner, {
            "type": "measure", "checkpoint_id": trained.checkpoint_id,
            "dataset_id": src.dataset_id, "data_sha256": src.request["data_sha256"],
            "process": src.request["process"], "measurement": src.request["measurement"],
            "queue": "cpu"}).id
    assert run_job(measure) == "succeeded", _job(measure).error
    a, _ = _measurement(trained.measurement_id)
    b, points = _measurement(_job(measure).measurement_id)
    assert b.summary["neural_entropy"] == a.summary["neural_entropy"]  # bit for bit on CPU
    assert b.checkpoint_id == trained.checkpoint_id and len(points) >= 8


def test_sample_job_stores_a_npy_of_finite_samples(service_env) -> None:
    train_id = _submit(lambda ds: train_request(ds, epochs=1))
    assert run_job(train_id) == "succeeded"
    trained = _job(train_id)
    with session_scope() as session:
        owner = session.get(Owner, session.get(Job, train_id).owner_id)
        sample = make_job(session, owner, {
            "type": "sample", "checkpoint_id": trained.checkpoint_id, "n": 16, "seed": 3,
            "solver": "euler", "steps": 20, "labels": None, "queue": "cpu"}).id
    assert run_job(sample) == "succeeded", _job(sample).error
    job = _job(sample)
    assert job.samples_png_sha256 is None  # vectors: no image grid
    x = np.load(io.BytesIO(get_artifact_store().read_bytes(job.samples_sha256)),
                allow_pickle=False)
    assert x.shape == (16, 2) and x.dtype == np.float32 and np.isfinite(x).all()


def test_a_job_runs_once_even_if_enqueued_twice(service_env) -> None:
    job_id = _submit(lambda ds: train_request(ds, epochs=1))
    assert run_job(job_id) == "succeeded"
    assert run_job(job_id) == "skipped"
    assert _job(job_id).attempts == 1


def test_job_canceled_while_queued_never_runs(service_env) -> None:
    job_id = _submit(lambda ds: train_request(ds, epochs=1), cancel_requested=True)
    assert run_job(job_id) == "skipped"
    job = _job(job_id)
    assert job.status == "canceled" and job.measurement_id is None and job.started_at is None


def test_cancel_during_training_stops_between_steps(service_env) -> None:
    job_id = _submit(lambda ds: train_request(ds, epochs=2000, batch_size=10))
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(run_job(job_id)))
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_job(job_id).progress or {}).get("phase") != "training":
        time.sleep(0.05)
    with session_scope() as session:
        session.get(Job, job_id).cancel_requested = True
    runner.join(60)
    assert result == ["canceled"]
    job = _job(job_id)
    assert job.status == "canceled" and job.finished_at is not None
    assert job.progress["epoch"] < 2000 and job.measurement_id is None


def test_failure_is_recorded_with_a_readable_error(service_env) -> None:
    job_id = _submit(lambda ds: train_request(ds, epochs=1))
    get_artifact_store().remove_blob(_job(job_id).request["data_sha256"])
    assert run_job(job_id) == "failed"
    job = _job(job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert "missing from the artifact store" in job.error
    assert "Traceback" not in job.error and "\n" not in job.error


def test_bad_settings_fail_with_the_models_message(service_env) -> None:
    def bad(ds):
        req = train_request(ds, epochs=1)
        req["network"]["width"] = 0
        return req

    job_id = _submit(bad)
    assert run_job(job_id) == "failed"
    error = _job(job_id).error
    assert "width" in error and "Traceback" not in error


def test_progress_writes_are_bounded_during_training(service_env, monkeypatch) -> None:
    from worker import progress

    writes: list[int] = []
    original = progress.ProgressReporter._write

    def counting(self, now):
        writes.append(1)
        return original(self, now)

    monkeypatch.setattr(progress.ProgressReporter, "_write", counting)
    job_id = _submit(lambda ds: train_request(ds, epochs=10, batch_size=10))
    started = time.monotonic()
    assert run_job(job_id) == "succeeded"
    elapsed = time.monotonic() - started
    steps = 10 * 15  # 150 training points / batch 10
    # at most one write per interval (0.2 s) plus one per phase change / forced write
    assert len(writes) <= elapsed / 0.2 + 10
    assert len(writes) < steps / 4
    assert _job(job_id).progress["epochs"] == 10


def test_sample_job_of_an_image_checkpoint_also_stores_a_png_grid(service_env) -> None:
    from models.checkpoints.io import CheckpointConfig, write_checkpoint
    from models.networks import UNetConfig, build_network
    from worker.checkpoints import store_checkpoint

    net_cfg = UNetConfig(in_channels=1, image_size=8, base_channels=8, channel_mults=(1,),
                         mid_attention=False, num_classes=3)
    config = CheckpointConfig.from_dict({
        "network": net_cfg.to_dict(), "process": {"kind": "vp"}, "event_shape": [1, 8, 8],
        "value_range": [-1.0, 1.0], "num_classes": 3, "provenance": {"source": "test"}})
    assert write_checkpoint(build_network(net_cfg), config)  # the format accepts it
    with session_scope() as session:
        owner = make_owner(session)
        ckpt = store_checkpoint(session, build_network(net_cfg), config, owner_id=owner.id,
                                job_id=None, epoch=None)
        job_id = make_job(session, owner, {
            "type": "sample", "checkpoint_id": ckpt.id, "n": 6, "seed": 0, "solver": "euler",
            "steps": 3, "labels": [0, 1, 2, 0, 1, 2], "queue": "cpu"}).id
    assert run_job(job_id) == "succeeded", _job(job_id).error
    job = _job(job_id)
    png = get_artifact_store().read_bytes(job.samples_png_sha256)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    x = np.load(io.BytesIO(get_artifact_store().read_bytes(job.samples_sha256)),
                allow_pickle=False)
    assert x.shape == (6, 1, 8, 8)


def test_density_bound_and_data_entropy_when_asked(service_env) -> None:
    job_id = _submit(lambda ds: train_request(
        ds, epochs=1, measurement={"density_bound": True, "data_entropy": True, "split": "train"}))
    assert run_job(job_id) == "succeeded", _job(job_id).error
    m, _ = _measurement(_job(job_id).measurement_id)
    bound, ent = m.summary["density_bound"], m.summary["data_entropy"]
    assert math.isfinite(bound["nats"]) and bound["stderr"] >= 0
    assert bound["bits_per_dim"] == pytest.approx(bound["nats"] / (2 * math.log(2)))
    assert math.isfinite(ent["nats"]) and ent["stderr"] > 0
    assert m.reproducibility["split"] == "train"
