"""Errors as RFC 9457 problem documents (`application/problem+json`), never a stack trace.

Every error the API returns has the shape

    {"type": "about:blank" | "https://...#name", "title": "Not Found", "status": 404,
     "detail": "dataset ds_... not found", "field": "dataset_id", ...extra}

`field` names the offending request field (dotted path, e.g. `training.milestones`) when there is
one. Request-validation errors become 422 problem documents with `field` (the first error) and an
`errors` list [{field, message, type}].
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# RFC 9110 names where Python's http.HTTPStatus still has the older RFC 7231 phrases
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def status_title(status: int) -> str:
    return _TITLES.get(status) or HTTPStatus(status).phrase


class ProblemError(Exception):
    """An error with an HTTP status that the handlers turn into a problem document.

    `field` is the dotted name of the offending request field; `extra` keys are added to the
    document (e.g. `limit=...`); `headers` go on the response (e.g. WWW-Authenticate).
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        field: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = int(status)
        self.title = title or status_title(self.status)
        self.detail = detail or self.title
        self.field = field
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(f"{self.status} {self.title}: {self.detail}")

    def document(self) -> dict[str, Any]:
        return problem_document(self.status, self.title, self.detail, self.field, **self.extra)


def problem_document(
    status: int, title: str, detail: str, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                           "detail": detail}
    if field is not None:
        doc["field"] = field
    doc.update(extra)
    return doc


def problem_response(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    title = title or status_title(status)
    body = problem_document(status, title, detail or title, field, **extra)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}),
                        media_type=PROBLEM_MEDIA_TYPE)


# ---- shorthands used by services ----
def not_found(kind: str, ident: str, field: str | None = None) -> ProblemError:
    """404 for an object that does not exist *or belongs to another owner* (never say which)."""
    return ProblemError(404, "Not Found", f"{kind} {ident!r} not found", field)


def unprocessable(detail: str, field: str | None = None, **extra: Any) -> ProblemError:
    return ProblemError(422, "Unprocessable Content", detail, field, **extra)


def over_limit(field: str, value: Any, limit: int, setting: str) -> ProblemError:
    """422 naming the cap: `field` is over the configured `setting` (e.g. MAX_EPOCHS)."""
    return ProblemError(
        422,
        "Limit Exceeded",
        f"{field} = {value} exceeds the limit {limit} (setting {setting.upper()})",
        field,
        limit=limit,
        limit_setting=setting.upper(),
    )


def conflict(detail: str, **extra: Any) -> ProblemError:
    return ProblemError(409, "Conflict", detail, **extra)


# ---- request validation ----
# tags of our discriminated unions, which pydantic puts into error locations
# (body.train.process.vp.beta_min): they are dropped from field names
UNION_TAGS = frozenset({"train", "measure", "sample", "gaussian_mixture", "digits",
                        "vp", "sl", "vp_cosine", "ve", "discrete"})


def field_name(error: Mapping[str, Any]) -> str:
    """Dotted field name of a pydantic error: `training.epochs`, `process.kind`."""
    parts = [str(p) for p in error.get("loc", ())]
    if parts and parts[0] in ("body", "query", "path", "header", "form", "cookie"):
        parts = parts[1:]
    parts = [p for p in parts if p not in UNION_TAGS]
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        tag = str((error.get("ctx") or {}).get("discriminator", "")).strip("'\"")
        if tag:
            parts.append(tag)
    return ".".join(parts) or "body"


def validation_problem(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    items = [
        {"field": field_name(e), "message": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]
    first = items[0] if items else {"field": "body", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}"
    if len(items) > 1:
        detail += f" (and {len(items) - 1} more)"
    return problem_response(422, "Unprocessable Content", detail, first["field"], errors=items)


# ---- handlers ----
async def _problem_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return JSONResponse(exc.document(), status_code=exc.status, headers=exc.headers,
                        media_type=PROBLEM_MEDIA_TYPE)


async def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(exc.errors())


def allowed_methods(request: Request) -> list[str]:
    """Every method the app documents for this path (for `Allow` on a 405), read from its
    OpenAPI paths (routers are nested, so a route-by-route match would see only one)."""
    patterns: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_patterns", None)
    if patterns is None:
        patterns = []
        for template, item in request.app.openapi().get("paths", {}).items():
            regex = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            methods = {m.upper() for m in item if m in _HTTP_METHODS}
            if "GET" in methods:
                methods.add("HEAD")
            patterns.append((re.compile(regex), methods))
        request.app.state.allow_patterns = patterns
    path = request.url.path
    allowed: set[str] = set()
    for pattern, methods in patterns:
        if pattern.match(path):
            allowed |= methods
    return sorted(allowed)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
    return problem_response(exc.status_code, None, detail, headers=headers)


DB_RETRY_AFTER_SECONDS = 5


async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    """Database errors are never a 500: a pool that stays full (`TimeoutError`) or a database
    that cannot be reached (`OperationalError`, `InterfaceError`) is 503 + Retry-After; a value
    the database refuses (`DataError`: out of range, NUL in text) is 422. No driver text leaks."""
    if isinstance(exc, sa_exc.DataError):
        log.info("database refused a value on %s %s: %s", request.method, request.url.path,
                 str(exc).splitlines()[0][:200])
        return problem_response(422, "Unprocessable Content",
                                "a value is out of the range the database can store")
    if isinstance(exc, sa_exc.TimeoutError):
        log.warning("database pool exhausted on %s %s", request.method, request.url.path)
        detail = "the database is busy (no free connection); retry after the Retry-After delay"
    else:
        log.error("database unreachable on %s %s: %s", request.method, request.url.path,
                  type(exc).__name__)
        detail = "the database is not reachable; retry after the Retry-After delay"
    return problem_response(503, "Service Unavailable", detail,
                            headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)})


def is_database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, (sa_exc.TimeoutError, sa_exc.OperationalError,
                            sa_exc.InterfaceError, sa_exc.DisconnectionError))


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "Internal Server Error",
                            "an internal error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on `app`."""
    app.add_exception_handler(ProblemError, _problem_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    for db_error in (sa_exc.TimeoutError, sa_exc.OperationalError, sa_exc.InterfaceError,
                     sa_exc.DisconnectionError, sa_exc.DataError):
        app.add_exception_handler(db_error, _database_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


# OpenAPI: documented problem responses for route decorators
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem document; more members may follow (e.g. `limit`).",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "Dotted name of the offending field."},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "Every validation error: [{field, message, type}]."},
        "limit": {"type": "integer", "description": "The cap that was exceeded."},
        "limit_setting": {"type": "string", "description": "The setting that holds the cap."},
    },
    "required": ["type", "title", "status", "detail"],
}
RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                      "schema": {"type": "integer"}}}


def _problem_entry(status: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"description": status_title(status),
                             "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
    if status in (429, 503):
        entry["headers"] = RETRY_AFTER_HEADER
    if status == 401:
        entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return entry


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting problem+json errors for the given statuses."""
    return {s: _problem_entry(s) for s in statuses}


def document_problems(schema: dict[str, Any]) -> None:
    """Make /openapi.json list every error status the app can answer, as problem+json:
    400 (NUL in path or query) and 503 (load shedding, database down) everywhere; 401 under /v1;
    413 and 422 where a body is taken; 422 where parameters are; and FastAPI's own 422 entries
    rewritten to the problem document the API really sends."""
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            wanted = {400, 503}
            if path.startswith("/v1/"):
                wanted.add(401)
            if "requestBody" in op:
                wanted.update({413, 422})
            if op.get("parameters"):
                wanted.add(422)
            for status in sorted(wanted):
                responses.setdefault(str(status), _problem_entry(status))
            if "422" in responses:
                responses["422"] = _problem_entry(422)
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        if not _referenced(schema, unused):
            schemas.pop(unused, None)


def _referenced(schema: dict[str, Any], name: str) -> bool:
    return f'"#/components/schemas/{name}"' in json.dumps(schema.get("paths", {}))
