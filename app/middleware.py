"""Pure ASGI middleware that keeps the API answering under load and hostile input.

- `LoadShedder`: at most MAX_IN_FLIGHT_REQUESTS requests are served at once; one more gets an
  immediate `503` problem document with `Retry-After` instead of queueing behind the others
  (queueing is what turned a burst into minutes of unresponsiveness). `/healthz` is exempt, so
  liveness answers at once even during a burst.
- `RequestGuard`: refuses, before any route runs,
  * a NUL byte in the path or the query string (`400`; PostgreSQL cannot store NUL in text),
  * a JSON body over MAX_JSON_BODY_BYTES (`413`),
  * a JSON body with a non-finite number (`Infinity`, `-Infinity`, `NaN`, or a literal such as
    `1e400` that overflows a double) or a NUL character in any string (`422`).
  Accepted JSON bodies are replayed unchanged to the route (whose models are strict: an
  integer field takes neither `"100"`, `true` nor `2.0`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_MEDIA_TYPE, problem_document

EXEMPT_FROM_SHEDDING = frozenset({"/healthz"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def send_problem(send: Send, status: int, title: str, detail: str,
                       headers: dict[str, str] | None = None, **extra: Any) -> None:
    """Answer with a problem+json document straight from the middleware."""
    body = json.dumps(problem_document(status, title, detail, **extra)).encode()
    raw = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()),
           (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class LoadShedder:
    """Serve at most `limit` requests at once. The next ones wait (first come, first served) for
    a slot up to `wait_seconds`, at most `max_waiting` of them; a request that finds the waiting
    room full, or waits longer, gets 503 + Retry-After. A waiting request costs a coroutine, not
    a thread or a database connection."""

    def __init__(self, app: ASGIApp, limit: int, retry_after: int, wait_seconds: float = 0.0,
                 max_waiting: int = 0) -> None:
        self.app, self.limit, self.retry_after = app, max(1, limit), max(1, retry_after)
        self.wait_seconds, self.max_waiting = max(0.0, wait_seconds), max(0, max_waiting)
        self.in_flight = 0
        self.waiting = 0
        self.shed = 0  # requests refused so far (for tests and logs)
        self._slots: asyncio.Semaphore | None = None  # made in the serving event loop

    async def _refuse(self, send: Send, why: str) -> None:
        self.shed += 1
        await send_problem(send, 503, "Service Unavailable",
                           f"the server is busy ({why}); retry after the Retry-After delay",
                           {"Retry-After": str(self.retry_after)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_FROM_SHEDDING:
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: no wait
        elif self.waiting >= self.max_waiting or self.wait_seconds <= 0:
            await self._refuse(send, f"{self.limit} requests in flight and {self.waiting} "
                               "waiting: settings MAX_IN_FLIGHT_REQUESTS, MAX_WAITING_REQUESTS")
            return
        else:
            self.waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=self.wait_seconds)
            except TimeoutError:
                await self._refuse(send, f"no free slot within {self.wait_seconds:g} s: "
                                   "settings MAX_IN_FLIGHT_REQUESTS, LOAD_SHED_WAIT_SECONDS")
                return
            finally:
                self.waiting -= 1
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self._slots.release()


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFinite(f"non-finite number {name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text} is out of the range of a double")
    return value


def _find_nul(value: Any, path: str = "") -> str | None:
    """Dotted path of the first string (or key) holding a NUL character, else None."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return sub
            found = _find_nul(item, sub)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_nul(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


class RequestGuard:
    """Refuse NUL bytes in path/query (400), oversized (413) or non-finite / NUL-carrying JSON
    bodies (422) before a route runs."""

    def __init__(self, app: ASGIApp, max_json_bytes: int) -> None:
        self.app, self.max_json_bytes = app, max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
        query = scope.get("query_string", b"")
        if (b"%00" in raw_path or b"\x00" in raw_path or "\x00" in scope.get("path", "")
                or b"%00" in query or b"\x00" in query):
            await send_problem(send, 400, "Bad Request",
                               "NUL bytes are not allowed in the path or the query string")
            return
        content_type = _header(scope, b"content-type").split(";")[0].strip().lower()
        is_json = content_type == "application/json" or content_type.endswith("+json")
        if scope.get("method") not in BODY_METHODS or not is_json:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_json_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if len(body) > self.max_json_bytes:
                await self._too_large(send)
                return
        problem = self._check(bytes(body))
        if problem is not None:
            await send_problem(send, 422, "Unprocessable Content", problem[1], field=problem[0])
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, send: Send) -> None:
        await send_problem(send, 413, "Content Too Large",
                           f"JSON bodies are capped at {self.max_json_bytes} bytes "
                           "(setting MAX_JSON_BODY_BYTES)",
                           limit=self.max_json_bytes, limit_setting="MAX_JSON_BODY_BYTES")

    @staticmethod
    def _check(body: bytes) -> tuple[str, str] | None:
        """(field, reason) when the body is refused; None also when it is not JSON at all (the
        route's own validation then answers 422)."""
        try:
            doc = json.loads(body, parse_constant=_refuse_constant, parse_float=_parse_float)
        except _NonFinite as exc:
            return "body", str(exc)
        except RecursionError:
            return "body", "the JSON document is nested too deeply"
        except ValueError:
            return None
        where = _find_nul(doc)
        if where is not None:
            return where, "NUL characters are not allowed in strings"
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
