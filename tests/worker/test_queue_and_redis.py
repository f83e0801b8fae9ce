"""The queue client (explicit timeouts, depths, unix sockets) and the bundled Redis server."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job as RQJob

from core.queue import (
    FAILURE_TTL_SECONDS,
    JOB_FUNCTION,
    RESULT_TTL_SECONDS,
    enqueue_job,
    queue_depths,
    redis_connection,
    redis_ping,
)
from core.settings import get_settings
from runner.redis_server import BundledRedis, RedisServerError
from worker.errors import JobInputError, readable_error


def test_enqueue_sets_explicit_timeout_and_ttls(redis_url: str, monkeypatch) -> None:
    monkeypatch.setenv("JOB_TIMEOUT_SECONDS", "12345")
    get_settings.cache_clear()
    conn = redis_connection(redis_url)
    rq_id = enqueue_job("job_abc", "cpu", connection=conn)
    job = RQJob.fetch(rq_id, connection=conn)
    assert job.timeout == 12345  # not RQ's 180 s default
    assert job.result_ttl == RESULT_TTL_SECONDS and job.failure_ttl == FAILURE_TTL_SECONDS
    assert job.func_name == JOB_FUNCTION and job.args == ("job_abc",)
    assert queue_depths(conn) == {"gpu": 0, "cpu": 1}
    assert enqueue_job("job_abc", "gpu", attempt=2, connection=conn) == "job_abc-r2"
    assert queue_depths(conn) == {"gpu": 1, "cpu": 1}
    get_settings.cache_clear()


def test_unknown_queue_is_refused(bundled_redis_url: str) -> None:
    with pytest.raises(ValueError, match="unknown queue"):
        enqueue_job("job_x", "tpu", connection=redis_connection(bundled_redis_url))


def test_unix_socket_urls_connect(bundled_redis_url: str) -> None:
    assert bundled_redis_url.startswith("unix://")
    assert redis_ping(redis_connection(bundled_redis_url))
    assert not redis_ping(Redis(unix_socket_path="/nonexistent/redis.sock"))


def test_bundled_server_listens_on_its_socket_only_and_stops_cleanly() -> None:
    d = Path(tempfile.mkdtemp(prefix="ne-redis-"))
    server = BundledRedis(d)
    with server:
        client = Redis.from_url(server.url)
        assert client.config_get("port") == {"port": "0"}  # no TCP
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("save") == {"save": ""}
        pid = server.process.pid
        client.close()
    assert not server.running and not (d / "redis.sock").exists()
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_bundled_server_replaces_a_stale_socket_and_refuses_a_live_one() -> None:
    d = Path(tempfile.mkdtemp(prefix="ne-redis-"))
    (d / "redis.sock").write_text("")  # left over by a killed run
    with BundledRedis(d) as server:
        with pytest.raises(RedisServerError, match="already listens"):
            BundledRedis(d).start()
        assert Redis.from_url(server.url).ping()


def test_socket_paths_over_the_limit_are_refused_with_a_hint() -> None:
    with pytest.raises(RedisServerError, match="shorter DATA_DIR"):
        BundledRedis(Path("/tmp") / ("x" * 120))


@pytest.mark.parametrize(("exc", "expected"), [
    (JobInputError("dataset ds_1 no longer exists"), "dataset ds_1 no longer exists"),
    (ValueError("n_samples = 5 is too small"), "ValueError: n_samples = 5 is too small"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "Out of memory on cuda"),
    (ZeroDivisionError("division by zero"), "Internal error in the worker (ZeroDivisionError"),
])
def test_errors_are_one_readable_line(exc: Exception, expected: str) -> None:
    text = readable_error(exc, device="cuda")
    assert expected in text and "\n" not in text and "Traceback" not in text


def test_timeouts_name_the_limit() -> None:
    from rq.timeouts import JobTimeoutException

    text = readable_error(JobTimeoutException("Task exceeded maximum timeout value (5 seconds)"))
    assert "time limit" in text and "JOB_TIMEOUT_SECONDS" in text


def test_worker_healthcheck_needs_a_live_worker_of_this_host(bundled_redis, bundled_redis_url,
                                                             monkeypatch) -> None:
    from worker import healthcheck
    from worker.service_worker import ServiceWorker

    monkeypatch.setenv("REDIS_URL", bundled_redis_url)
    get_settings.cache_clear()
    try:
        assert healthcheck.main() == 1  # nobody registered
        w = ServiceWorker(["cpu"], connection=redis_connection(bundled_redis_url), name="hc")
        w.register_birth()
        w.heartbeat()
        assert healthcheck.main() == 0
        w.register_death()
        assert healthcheck.main() == 1
    finally:
        get_settings.cache_clear()
