"""Conditional GETs of immutable results: `ETag`, `Cache-Control` and `304 Not Modified`.

A finished measurement (its document, its curve as JSON or CSV, its plot), a checkpoint's
.safetensors and a sample job's outputs never change once they exist, so their ETag is derived
from the id (or the content hash) alone and a client that presents it in `If-None-Match` gets a
304 after the ownership check, without the rows or bytes being read again. Responses are
`private` (they sit behind an API key).
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from fastapi import Request, Response

IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"


def etag_for(*parts: str) -> str:
    """A strong ETag from the parts naming an immutable representation."""
    return '"' + "-".join(parts) + '"'


def cache_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": IMMUTABLE_CACHE_CONTROL}


def matches(request: Request, etag: str) -> bool:
    """True when `If-None-Match` lists `etag` (weak or strong) or is `*`."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def not_modified(request: Request, etag: str) -> Response | None:
    """A 304 carrying the cache headers when the client already has `etag`, else None."""
    if matches(request, etag):
        return Response(status_code=304, headers=cache_headers(etag))
    return None


class BytesCache:
    """A small thread-safe LRU of rendered immutable bodies (plots), bounded in total bytes."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: str, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = body
            self._size += len(body)
            while self._size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)


NOT_MODIFIED_DOC: dict[int | str, dict[str, str]] = {
    304: {"description": "Not Modified: the `If-None-Match` ETag is current (no body)."}}
