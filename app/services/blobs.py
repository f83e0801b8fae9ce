"""HTTP responses for stored blobs: streamed from the artifact store (checked against their sha256
as they go), or a 307 redirect to a presigned S3 URL where ARTIFACT_PRESIGNED_DOWNLOADS is on.

A blob found corrupt while streaming ends the response one chunk short of its Content-Length, so
the client sees a broken download rather than wrong bytes.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from app.errors import ProblemError
from core.artifacts import ArtifactNotFound, ArtifactStore
from core.tables import Artifact


def blob_response(session: Session, store: ArtifactStore, sha: str, *, media_type: str,
                  filename: str | None = None, what: str = "file",
                  headers: dict[str, str] | None = None) -> Response:
    """The blob `sha` as a download (404 problem naming `what` when the store lacks it)."""
    out = {"X-Content-SHA256": sha, **(headers or {})}
    if filename:
        out["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    url = store.presigned_url(sha, media_type=media_type, filename=filename)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers=out)
    try:
        chunks = store.iter_chunks(sha)
    except ArtifactNotFound:
        raise ProblemError(404, "Not Found", f"the {what} is missing from the artifact store") \
            from None
    row = session.get(Artifact, sha)
    if row is not None:
        out["Content-Length"] = str(int(row.size_bytes))
    return StreamingResponse(chunks, media_type=media_type, headers=out)
