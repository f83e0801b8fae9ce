"""The queue client: Redis connections, enqueueing job ids on RQ, queue depths.

Redis is transport, not storage: only the DB job id travels through it, and the worker reads
everything else from the database (the single source of truth). A job lost by Redis is
re-enqueued by the worker's reconciler (`worker.reconciler`).
"""

from __future__ import annotations

from functools import lru_cache

from redis import Redis
from rq import Queue

from core.settings import get_settings

QUEUE_NAMES: tuple[str, ...] = ("gpu", "cpu")  # one queue per resource kind
JOB_FUNCTION = "worker.jobs.run_job"  # by name: the API never imports the worker (or torch's CUDA)
RESULT_TTL_SECONDS = 24 * 3600  # RQ keeps a finished job's record this long (the DB keeps results)
FAILURE_TTL_SECONDS = 7 * 24 * 3600  # RQ keeps a failed job's record (with its traceback) this long
REDIS_SOCKET_TIMEOUT_SECONDS = 10.0  # for client calls (the worker raises it for its blocking pops)


@lru_cache(maxsize=8)
def _connection_for(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


def redis_connection(url: str | None = None) -> Redis:
    """A Redis client for `url` (default `Settings.resolved_redis_url`; `redis://`, `rediss://`
    and `unix:///path/to/redis.sock` all work). One client per URL per process; redis-py resets its
    connection pool after a fork, so the same client is safe in RQ's work horses."""
    return _connection_for(url or get_settings().resolved_redis_url)


def get_queue(queue_name: str, connection: Redis | None = None) -> Queue:
    """The RQ queue `queue_name` (one of `QUEUE_NAMES`)."""
    if queue_name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {queue_name!r}; expected one of {', '.join(QUEUE_NAMES)}")
    return Queue(queue_name, connection=connection or redis_connection())


def rq_job_id(job_id: str, attempt: int = 0) -> str:
    """The RQ id of a DB job: the DB id, suffixed `-rN` when the reconciler re-enqueues it."""
    return job_id if attempt <= 0 else f"{job_id}-r{attempt}"


def enqueue_job(
    job_id: str, queue_name: str, *, attempt: int = 0, connection: Redis | None = None
) -> str:
    """Put DB job `job_id` on RQ queue `queue_name`; returns the RQ job id.

    The timeout is explicit (`Settings.job_timeout_seconds`; RQ's default of 180 s would kill
    training), RQ's own record of the run is kept `RESULT_TTL_SECONDS` / `FAILURE_TTL_SECONDS`.
    """
    settings = get_settings()
    queue = get_queue(queue_name, connection)
    job = queue.enqueue(
        JOB_FUNCTION,
        job_id,
        job_id=rq_job_id(job_id, attempt),
        job_timeout=settings.job_timeout_seconds,
        result_ttl=RESULT_TTL_SECONDS,
        failure_ttl=FAILURE_TTL_SECONDS,
        description=f"run_job({job_id})",
    )
    return job.id


def queue_depths(connection: Redis | None = None) -> dict[str, int]:
    """Jobs waiting on each queue, e.g. `{"gpu": 0, "cpu": 3}` (for /metrics)."""
    conn = connection or redis_connection()
    return {name: Queue(name, connection=conn).count for name in QUEUE_NAMES}


def redis_ping(connection: Redis | None = None) -> bool:
    """True when Redis answers PING (for /readyz)."""
    try:
        return bool((connection or redis_connection()).ping())
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
