"""Prometheus metrics: request latency histogram, jobs by status, queue depths.

Each app gets its own registry (so tests can build many apps). Jobs by status and queue depths
are read at scrape time (database and Redis are the truth); a failing source is reported by
`neural_entropy_{database,redis}_up 0` instead of an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import queue as rq_client
from core.tables import Job, JobStatus

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StateCollector(Collector):
    """Jobs by status (from the DB) and queue depths (from Redis), read on every scrape."""

    def __init__(self, sessions: Callable[[], sessionmaker[Session]],
                 redis: Callable[[], Redis]) -> None:
        self._sessions, self._redis = sessions, redis

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("neural_entropy_jobs", "Jobs by status.", labels=["status"])
        db_up = GaugeMetricFamily("neural_entropy_database_up", "1 if the database answered.")
        try:
            with self._sessions()() as session:
                counts = dict(session.execute(
                    select(Job.status, func.count()).group_by(Job.status)).all())
            for status in JobStatus:
                jobs.add_metric([status.value], float(counts.get(status.value, 0)))
            db_up.add_metric([], 1.0)
        except Exception:  # noqa: BLE001 - report, don't fail the scrape
            log.warning("metrics: database not reachable", exc_info=True)
            db_up.add_metric([], 0.0)
        yield jobs
        yield db_up
        depth = GaugeMetricFamily("neural_entropy_queue_depth", "Jobs waiting on each RQ queue.",
                                  labels=["queue"])
        redis_up = GaugeMetricFamily("neural_entropy_redis_up", "1 if Redis answered.")
        try:
            for name, n in rq_client.queue_depths(self._redis()).items():
                depth.add_metric([name], float(n))
            redis_up.add_metric([], 1.0)
        except Exception:  # noqa: BLE001
            log.warning("metrics: Redis not reachable", exc_info=True)
            redis_up.add_metric([], 0.0)
        yield depth
        yield redis_up


class Metrics:
    """One app's registry and instruments."""

    def __init__(self, sessions: Callable[[], sessionmaker[Session]],
                 redis: Callable[[], Redis]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "neural_entropy_http_request_duration_seconds",
            "HTTP request latency by method, route template and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(StateCollector(sessions, redis))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Pure ASGI middleware timing every HTTP request (labelled by the matched route template)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(scope.get("method", ""), template,
                                        str(status["code"])).observe(time.perf_counter() - start)
