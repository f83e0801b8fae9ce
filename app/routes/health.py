"""/healthz (process up), /readyz (database, Redis and artifact store reachable), /metrics (Prometheus). No key."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.errors import DB_RETRY_AFTER_SECONDS
from core import queue as rq_client
from core.settings import code_version

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    """Answered on the event loop, never queued behind worker threads or the in-flight cap."""
    return {"status": "ok", "version": code_version()}


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception:  # noqa: BLE001 - any failure means not ready
        log.warning("readyz: the database is not reachable", exc_info=True)
        return "unreachable"


def _check_redis(request: Request) -> str | None:
    try:
        conn = rq_client.redis_connection(request.app.state.settings.resolved_redis_url)
        return None if rq_client.redis_ping(conn) else "no answer to PING"
    except Exception:  # noqa: BLE001
        log.warning("readyz: Redis is not reachable", exc_info=True)
        return "unreachable"


def _check_artifacts(request: Request) -> str | None:
    try:
        request.app.state.artifacts.check()
        return None
    except Exception:  # noqa: BLE001
        log.warning("readyz: the artifact store is not reachable", exc_info=True)
        return "unreachable"


@router.get("/readyz", summary="Database, Redis and the artifact store are reachable (200), else 503",
            responses={503: {"description": "A dependency is not reachable: `checks` names it "
                             "(`error: unreachable`), never its address or the driver's text. "
                             "Retry-After is set."}})
async def readyz(request: Request) -> JSONResponse:
    db_error = await run_in_threadpool(_check_database, request)
    redis_error = await run_in_threadpool(_check_redis, request)
    store_error = await run_in_threadpool(_check_artifacts, request)
    checks: dict[str, Any] = {
        "database": "ok" if db_error is None else f"error: {db_error}",
        "redis": "ok" if redis_error is None else f"error: {redis_error}",
        "artifacts": "ok" if store_error is None else f"error: {store_error}",
    }
    ready = db_error is None and redis_error is None and store_error is None
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503,
                        headers={} if ready else {"Retry-After": str(DB_RETRY_AFTER_SECONDS)})


@router.get("/metrics", summary="Prometheus metrics: jobs by status, queue depth, latencies",
            response_class=Response,
            responses={200: {"content": {"text/plain; version=0.0.4": {}}}})
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
