"""The FastAPI app: `create_app(settings)`; `app` (for `uvicorn app.main:app`) is built lazily.

/healthz, /readyz, /metrics, /docs and /openapi.json need no key; everything under /v1 needs
`Authorization: Bearer <key>`; the dashboard under /ui/ (app.ui) signs browsers in with a
cookie. Errors are RFC 9457 problem documents (app.errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy.orm import sessionmaker

from app.errors import document_problems, install_error_handlers
from app.middleware import LoadShedder, RequestGuard
from app.routes import (
    checkpoints,
    compare,
    datasets,
    health,
    jobs,
    measurements,
    sweeps,
    workers,
)
from app.services.metrics import LatencyMiddleware, Metrics
from app.ui import install_ui
from core import queue as rq_client
from core.artifacts import store_for
from core.db import engine_for
from core.settings import Settings, code_version, get_settings

DESCRIPTION = """\
Measure the **neural entropy** of diffusion models (Premkumar, *Neural Entropy*, NeurIPS 2025):
upload a data set or pick a built-in one, train an entropy-matching model or upload a checkpoint,
and fetch the entropy-production curve, S_NN, S_tot (when the data's score is known) and the
density bound. Entropies are in nats unless a field says bits.

Authenticate with `Authorization: Bearer <key>` (`python -m app.cli create-key NAME`). Lists are
paginated with `limit` (1..500, default 50) and `offset`; each page has `total` and
`next_offset` (null on the last page). Errors are `application/problem+json` documents with
`title`, `status`, `detail` and, when a request field is at fault, `field`.
"""

TAGS = [
    {"name": "datasets", "description": "Upload arrays or create synthetic / built-in sets."},
    {"name": "jobs", "description": "Train, measure and sample jobs; poll their status."},
    {"name": "sweeps", "description": "Grids of train jobs (sizes, seeds, processes, networks) "
     "as one request: the table over seeds, the fit S_NN = a + b ln N, the plot."},
    {"name": "measurements", "description": "S_NN, S_tot, curves (JSON / CSV) and plots; "
     "several measurements compared on one time axis."},
    {"name": "checkpoints", "description": "Safetensors checkpoints: upload, download."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics (no key)."},
]


def _extra_schemas() -> dict[str, Any]:
    """JSON schemas referenced by hand-written request bodies (the JSON variant of uploads)."""
    out: dict[str, Any] = {}
    for model in datasets.EXTRA_SCHEMAS:
        assert issubclass(model, BaseModel)
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes,
                                 tags=app.openapi_tags)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, extra in _extra_schemas().items():
                components.setdefault(name, extra)
            document_problems(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured app; `settings` default to the process settings (environment)."""
    settings = settings or get_settings()
    engine = engine_for(settings.resolved_database_url)
    session_factory = sessionmaker(bind=engine, expire_on_commit=False)
    store = store_for(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store.check()  # a missing S3 bucket stops the start-up with a clear error
        yield

    app = FastAPI(title="Neural entropy service", version=code_version(),
                  description=DESCRIPTION, openapi_tags=TAGS, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.artifacts = store
    app.state.metrics = Metrics(
        lambda: session_factory,
        lambda: rq_client.redis_connection(settings.resolved_redis_url))
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestGuard, max_json_bytes=settings.max_json_body_bytes)
    app.add_middleware(LoadShedder, limit=settings.max_in_flight_requests,
                       retry_after=settings.retry_after_seconds,
                       wait_seconds=settings.load_shed_wait_seconds,
                       max_waiting=settings.max_waiting_requests)
    install_error_handlers(app)
    for router in (health.router, datasets.router, jobs.router, sweeps.router,
                   measurements.router, compare.router, checkpoints.router, workers.router):
        app.include_router(router)
    install_ui(app)
    _install_openapi(app)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """`app.main.app`: the app for the process settings, built on first access (no import-time
    side effects, so tests can import this module freely)."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
