"""A sweep feeds its jobs to the queue (`core.sweep_feed`), on SQLite and PostgreSQL with the
bundled Redis: only a window of its jobs are on RQ at once, a real RQ worker runs the whole
sweep through feeding, a job submitted later is not stuck behind the whole grid, concurrent
feeds never release more than the window, a Redis flush never puts a held job on the queue, a
canceled held job is never released. Also: concurrent submissions on SQLite respect the
queued-submission cap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.main import create_app
from core.settings import Settings, get_settings
from core.sweep_feed import HELD_PHASE, feed_all, feed_sweep
from core.tables import Job, JobStatus, utcnow
from tests.app.helpers import create_mixture
from worker.reconciler import reconcile

TINY = {"arch": "mlp", "fourier_features": 8, "width": 16, "hidden_widths": [16]}
TRAINING = {"epochs": 1, "batch_size": 64, "num_steps": 2}
MEASUREMENT = {"n_times": 8, "n_samples": 256}
T = TypeVar("T")


@pytest.fixture
def window(request: pytest.FixtureRequest, settings: Settings,
           monkeypatch: pytest.MonkeyPatch) -> int:
    """SWEEP_JOBS_IN_FLIGHT for the app (`settings`) and for the feeds (`get_settings()`);
    parametrize indirectly, default 2."""
    value = getattr(request, "param", 2)
    monkeypatch.setenv("SWEEP_JOBS_IN_FLIGHT", str(value))
    get_settings.cache_clear()
    settings.sweep_jobs_in_flight = value
    return int(value)


def submit_sweep(api: TestClient, n_points: int) -> dict[str, Any]:
    dataset = create_mixture(api, n_samples=200)
    body = {"base": {"dataset_id": dataset["id"], "network": TINY, "queue": "cpu",
                     "training": TRAINING, "measurement": MEASUREMENT},
            "grid": {"seed": list(range(n_points))}}
    r = api.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def job_ids(doc: dict[str, Any]) -> list[str]:
    return [j["id"] for j in doc["jobs"]]


def rows(session: Session, ids: list[str]) -> list[Job]:
    session.expire_all()
    found = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
    return [found[i] for i in ids]


def on_queue(connection: Redis) -> list[str]:
    return Queue("cpu", connection=connection).job_ids


def end_jobs(session: Session, ids: list[str]) -> None:
    """Mark jobs succeeded in the database, as a worker would when they end."""
    session.execute(update(Job).where(Job.id.in_(ids))
                    .values(status=JobStatus.succeeded.value, finished_at=utcnow()))
    session.commit()


def test_submission_puts_only_the_window_on_the_queue(api: TestClient, window: int,
                                                      session: Session,
                                                      bundled_redis: Redis) -> None:
    doc = submit_sweep(api, 5)
    ids = job_ids(doc)
    assert on_queue(bundled_redis) == ids[:window] == ids[:2]
    found = rows(session, ids)
    assert [j.held for j in found] == [False, False, True, True, True]
    assert all(j.status == JobStatus.queued.value for j in found)
    assert [(j.progress or {}).get("phase") for j in found[2:]] == [HELD_PHASE] * 3
    # no live worker listens on `cpu` here: that, the more urgent news, is what the API says
    assert api.get(f"/v1/jobs/{ids[2]}").json()["progress"]["phase"] == "waiting_for_worker"
    assert doc["counts"]["queued"] == 5  # held jobs are queued jobs to the user


@pytest.mark.parametrize("window", [1], indirect=True)
def test_a_worker_runs_the_whole_sweep_and_a_later_job_waits_behind_one_of_its_jobs(
        api: TestClient, window: int, session: Session, bundled_redis: Redis) -> None:
    doc = submit_sweep(api, 3)
    ids = job_ids(doc)
    other = api.post("/v1/jobs", json={"type": "train", "dataset_id": doc["request"]["base"][
        "dataset_id"], "network": TINY, "queue": "cpu", "training": TRAINING,
        "measurement": MEASUREMENT})
    assert other.status_code == 202, other.text
    assert on_queue(bundled_redis) == [ids[0], other.json()["id"]]

    worker = SimpleWorker([Queue("cpu", connection=bundled_redis)], connection=bundled_redis)
    assert worker.work(burst=True)  # ends when the queue is empty: the feeds kept it filled

    everything = [*ids, other.json()["id"]]
    found = rows(session, everything)
    assert [j.status for j in found] == ["succeeded"] * 4, [j.error for j in found]
    assert not any(j.held for j in found)
    by_start = [j.id for j in sorted(found, key=lambda j: j.started_at)]
    assert by_start == [ids[0], other.json()["id"], ids[1], ids[2]]
    assert api.get(doc["links"]["self"]).json()["status"] == "succeeded"


def test_concurrent_feeds_release_exactly_the_window(api: TestClient, window: int,
                                                     session: Session,
                                                     bundled_redis: Redis) -> None:
    ids = job_ids(submit_sweep(api, 7))
    sweep_id = rows(session, ids[:1])[0].sweep_id
    assert sweep_id is not None
    end_jobs(session, ids[:2])  # the window's two jobs ended: room for two more
    released = [i for ids_ in at_once(lambda: feed_sweep(sweep_id, bundled_redis)) for i in ids_]
    assert sorted(released) == sorted(ids[2:4])  # the next two in grid order, each once
    assert sorted(on_queue(bundled_redis)) == sorted(ids[:4])
    assert [j.held for j in rows(session, ids)] == [False] * 4 + [True] * 3
    assert feed_sweep(sweep_id, bundled_redis) == []


def test_redis_flush_requeues_released_jobs_and_never_held_ones(api: TestClient, window: int,
                                                                session: Session,
                                                                bundled_redis: Redis) -> None:
    ids = job_ids(submit_sweep(api, 5))
    long_ago = utcnow() - timedelta(hours=1)
    session.execute(update(Job).where(Job.id.in_(ids))
                    .values(created_at=long_ago, heartbeat_at=long_ago))
    session.commit()
    bundled_redis.flushdb()
    report = reconcile(bundled_redis)
    assert sorted(report.requeued) == sorted(ids[:2])
    assert sorted(on_queue(bundled_redis)) == sorted(ids[:2])
    assert feed_all(bundled_redis) == {}  # the window is full
    assert [j.held for j in rows(session, ids)] == [False, False, True, True, True]


@pytest.mark.parametrize("window", [1], indirect=True)
def test_a_canceled_held_job_is_never_released(api: TestClient, window: int, session: Session,
                                               bundled_redis: Redis) -> None:
    ids = job_ids(submit_sweep(api, 3))
    canceled = api.post(f"/v1/jobs/{ids[1]}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    end_jobs(session, ids[:1])
    assert feed_all(bundled_redis) == {rows(session, ids[:1])[0].sweep_id: [ids[2]]}
    assert on_queue(bundled_redis) == [ids[0], ids[2]]
    assert [j.status for j in rows(session, ids)] == ["succeeded", "canceled", "queued"]
    assert feed_all(bundled_redis) == {}


def test_concurrent_submissions_respect_the_queued_cap(settings: Settings,
                                                       owner_key: tuple[str, str],
                                                       session: Session) -> None:
    """Eight POST /v1/jobs at once with MAX_QUEUED_JOBS_PER_OWNER=1: exactly one is accepted
    (SQLite has no row locks; the owner's row is written first, `core.db.lock_for_write`)."""
    capped = settings.model_copy(update={"max_queued_jobs_per_owner": 1})
    with TestClient(create_app(capped), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {owner_key[1]}"
        ds = create_mixture(c, n_samples=200)
        codes = at_once(lambda: c.post("/v1/jobs", json={"type": "train",
                                                          "dataset_id": ds["id"]}).status_code)
    assert sorted(codes) == [202] + [429] * 7
    assert len(session.scalars(select(Job)).all()) == 1


def at_once(call: Callable[[], T], n: int = 8) -> list[T]:
    """`call()` in `n` threads released together; their results (an exception is re-raised)."""
    start = threading.Barrier(n, timeout=60)

    def run(_: int) -> T:
        start.wait()
        return call()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))
