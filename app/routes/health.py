"""/healthz (process up), /readyz (database, Redis and artifact store reachable), /metrics (Prometheus). No key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from core import queue as rq_client
from core.settings import code_version

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": code_version()}


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _check_redis(request: Request) -> str | None:
    try:
        conn = rq_client.redis_connection(request.app.state.settings.resolved_redis_url)
        return None if rq_client.redis_ping(conn) else "no answer to PING"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def _check_artifacts(request: Request) -> str | None:
    try:
        request.app.state.artifacts.check()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


@router.get("/readyz", summary="Database, Redis and the artifact store are reachable (200), else 503",
            responses={503: {"description": "A dependency is not reachable."}})
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
                        status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics: jobs by status, queue depth, latencies",
            response_class=Response,
            responses={200: {"content": {"text/plain; version=0.0.4": {}}}})
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
