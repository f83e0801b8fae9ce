"""Receiving a multipart upload with the byte cap enforced WHILE the body streams in.

`Content-Length` over the cap is refused before a byte is read; without one (chunked bodies), the
counter stops the stream at the first chunk past the cap. Either way: 413 naming the cap, and
nothing is stored. The file part is copied to a staging file in the artifact store's tmp dir and
hashed on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from app.errors import ProblemError

MAX_FORM_FIELDS = 20
MAX_FIELD_BYTES = 64 * 1024
COPY_CHUNK = 1024 * 1024


@dataclass
class ReceivedUpload:
    """The text fields of the form, and the staged file part (path, name, sha256, size)."""

    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    filename: str | None = None
    sha256: str | None = None
    size: int = 0


def too_large(limit: int) -> ProblemError:
    return ProblemError(413, "Content Too Large",
                        f"the upload exceeds the limit of {limit} bytes (setting MAX_UPLOAD_BYTES)",
                        "file", limit=limit, limit_setting="MAX_UPLOAD_BYTES")


def check_content_length(request: Request, limit: int) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        return
    try:
        declared = int(raw)
    except ValueError:
        raise ProblemError(400, "Bad Request", "invalid Content-Length header") from None
    if declared > limit:
        raise too_large(limit)


async def _limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        yield chunk


async def receive_multipart(request: Request, limit: int, staging: Path,
                            file_field: str = "file") -> ReceivedUpload:
    """Parse a multipart body of at most `limit` bytes; the part `file_field` goes to `staging`."""
    check_content_length(request, limit)
    parser = MultiPartParser(request.headers, _limited_stream(request, limit),
                             max_files=1, max_fields=MAX_FORM_FIELDS,
                             max_part_size=MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ProblemError(422, "Unprocessable Content", f"malformed multipart body: {exc.message}",
                           "file") from None
    out = ReceivedUpload()
    try:
        for key, value in form.multi_items():
            text = value.filename or "" if isinstance(value, UploadFile) else value
            if "\x00" in key or "\x00" in text:
                raise ProblemError(422, "Unprocessable Content",
                                   "NUL characters are not allowed in form fields or file names",
                                   key.replace("\x00", "") or "form")
            if isinstance(value, UploadFile):
                if key != file_field:
                    raise ProblemError(422, "Unprocessable Content",
                                       f"unexpected file field {key!r}; send the file as "
                                       f"{file_field!r}", key)
                out.filename = value.filename
                out.sha256, out.size = await _copy(value, staging)
                out.file_path = staging
            else:
                if key in out.fields:
                    raise ProblemError(422, "Unprocessable Content",
                                       f"form field {key!r} given twice", key)
                out.fields[key] = value
    finally:
        await form.close()
    if out.file_path is None:
        raise ProblemError(422, "Unprocessable Content",
                           f"missing the multipart file field {file_field!r}", file_field)
    return out


async def _copy(upload: UploadFile, target: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while chunk := await upload.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size
