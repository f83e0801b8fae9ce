"""The reconciler re-enqueues DB jobs that Redis lost or whose run's lease expired, and leaves jobs
on their way (and live runs, whatever Redis says) alone."""

from __future__ import annotations

from datetime import timedelta

from redis import Redis
from rq import Queue
from rq.job import Job as RQJob

from core.db import session_scope
from core.queue import enqueue_job, redis_connection
from core.tables import Job, JobStatus, utcnow
from tests.worker.seed import make_job, make_mixture_dataset, make_owner, train_request
from worker.reconciler import MAX_ATTEMPTS, reconcile


def _job(**columns: object) -> str:
    with session_scope() as session:
        owner = make_owner(session)
        ds = make_mixture_dataset(session, owner, n=40)
        return make_job(session, owner, train_request(ds), **columns).id


def _row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _queued_ids(conn: Redis) -> list[str]:
    return Queue("cpu", connection=conn).job_ids


def test_queued_job_lost_by_redis_is_reenqueued(service_env) -> None:
    old = utcnow() - timedelta(minutes=5)
    job_id = _job(created_at=old, rq_job_id="job_gone")
    conn = redis_connection()
    report = reconcile(conn)
    assert report.requeued == [job_id]
    assert _queued_ids(conn) == [job_id]
    assert _row(job_id).status == JobStatus.queued.value


def test_queued_job_still_in_redis_is_left_alone(service_env) -> None:
    job_id = _job(created_at=utcnow() - timedelta(minutes=5))
    conn = redis_connection()
    rq_id = enqueue_job(job_id, "cpu", connection=conn)
    with session_scope() as session:
        session.get(Job, job_id).rq_job_id = rq_id
    assert reconcile(conn).requeued == []
    assert _queued_ids(conn) == [job_id]


def test_young_queued_job_not_yet_enqueued_is_left_alone(service_env) -> None:
    job_id = _job()  # created now, no rq_job_id: the API may be about to enqueue it
    assert reconcile(redis_connection()).requeued == []
    assert _row(job_id).status == JobStatus.queued.value


LEASE = 30.0  # Settings.lease_seconds default
EXPIRED = timedelta(seconds=LEASE + 5)


def test_running_job_whose_lease_expired_is_requeued_under_a_fresh_rq_id(service_env) -> None:
    job_id = _job(status=JobStatus.running.value, worker_name="host.123.dead", attempts=1,
                  rq_job_id="x", heartbeat_at=utcnow() - EXPIRED)
    conn = redis_connection()
    report = reconcile(conn, lease_seconds=LEASE)
    assert report.requeued == [job_id]
    row = _row(job_id)
    assert (row.status, row.worker_name, row.rq_job_id) == ("queued", None, f"{job_id}-r1")
    assert _queued_ids(conn) == [f"{job_id}-r1"]


def test_running_job_with_a_live_lease_is_left_alone_even_when_redis_lost_everything(
        service_env) -> None:
    """Redis flushed under a running job (no RQ job, no worker key): the run still renews its
    lease in the database, so nobody takes the job over and it runs once."""
    job_id = _job(status=JobStatus.running.value, worker_name="host.456.alive", attempts=1,
                  rq_job_id="gone", heartbeat_at=utcnow() - timedelta(seconds=LEASE - 5))
    conn = redis_connection()
    conn.flushall()
    assert reconcile(conn, lease_seconds=LEASE).requeued == []
    assert _row(job_id).status == JobStatus.running.value
    assert _queued_ids(conn) == []


def test_running_job_whose_rq_job_ended_is_requeued_at_once(service_env) -> None:
    """The horse died under a live worker (RQ marked its job failed): no need to wait for the
    lease."""
    job_id = _job(status=JobStatus.running.value, worker_name="w", attempts=1,
                  heartbeat_at=utcnow())
    conn = redis_connection()
    rq_id = enqueue_job(job_id, "cpu", connection=conn)
    with session_scope() as session:
        session.get(Job, job_id).rq_job_id = rq_id
    rq_job = RQJob.fetch(rq_id, connection=conn)
    rq_job.set_status("failed")
    assert reconcile(conn, lease_seconds=LEASE).requeued == [job_id]


def test_job_lost_too_often_is_failed_with_a_readable_error(service_env) -> None:
    job_id = _job(status=JobStatus.running.value, worker_name="gone", attempts=MAX_ATTEMPTS)
    report = reconcile(redis_connection())
    assert report.failed == [job_id]
    row = _row(job_id)
    assert row.status == "failed"
    assert f"lost {MAX_ATTEMPTS} times" in row.error and "Traceback" not in row.error


def test_lost_job_with_cancel_requested_is_canceled(service_env) -> None:
    job_id = _job(status=JobStatus.running.value, worker_name="gone", attempts=1,
                  cancel_requested=True)
    assert reconcile(redis_connection()).canceled == [job_id]
    assert _row(job_id).status == "canceled"


def test_two_reconcilers_requeue_a_lost_job_once(service_env) -> None:
    job_id = _job(status=JobStatus.running.value, worker_name="gone", attempts=1)
    conn = redis_connection()
    first, second = reconcile(conn), reconcile(conn)
    assert first.requeued == [job_id] and second.requeued == []
    assert _queued_ids(conn) == [f"{job_id}-r1"]


def test_a_released_lease_is_taken_over_at_once(service_env) -> None:
    """A worker stopped with SIGTERM kills its horse and drops the lease (heartbeat_at NULL)."""
    job_id = _job(status=JobStatus.running.value, worker_name="host.789.stopped", attempts=1,
                  heartbeat_at=None)
    assert reconcile(redis_connection(), lease_seconds=3600).requeued == [job_id]
