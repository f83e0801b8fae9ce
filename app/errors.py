"""Errors as RFC 9457 problem documents (`application/problem+json`), never a stack trace.

Every error the API returns has the shape

    {"type": "about:blank" | "https://...#name", "title": "Not Found", "status": 404,
     "detail": "dataset ds_... not found", "field": "dataset_id", ...extra}

`field` names the offending request field (dotted path, e.g. `training.milestones`) when there is
one. Request-validation errors become 422 problem documents with `field` (the first error) and an
`errors` list [{field, message, type}].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


async def _http_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, None, detail, headers=exc.headers)


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "Internal Server Error",
                            "an internal error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on `app`."""
    app.add_exception_handler(ProblemError, _problem_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


# OpenAPI: documented problem responses for route decorators
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "Dotted name of the offending field."},
    },
    "required": ["type", "title", "status", "detail"],
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting problem+json errors for the given statuses."""
    return {
        s: {
            "description": status_title(s),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for s in statuses
    }
