"""The artifact store interface: content-addressed blobs plus a few named internal objects.

A blob is addressed by the sha256 hex digest of its bytes and has an `Artifact` row; writing the
same bytes twice stores them once. Backends (`local.py`, `s3.py`) implement a handful of
primitives (`_exists`, `_put_file`, `_open_chunks`, `_delete`, named objects); everything else —
hashing, registering rows, integrity checks on read, removing an orphan when the request that
wrote it rolls back, deleting unreferenced blobs after commit — lives here once.

Reads are checked: `iter_chunks`, `read_bytes` and `download_to` hash what they deliver and raise
`ArtifactCorrupt` when the digest differs from the address (a streamed reader learns it at the
end, after the last chunk). Named objects (`put_object`, `get_object`, `delete_object`,
`list_objects`) hold internal data with a mutable name, e.g. `training-state/<job_id>.state`;
they have no row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.tables import Artifact, Checkpoint, Dataset, Job

log = logging.getLogger(__name__)

_UPSERT_INSERTS: dict[str, Any] = {"postgresql": pg_insert, "sqlite": sqlite_insert}
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
CHUNK_BYTES = 1024 * 1024


class ArtifactNotFound(FileNotFoundError):
    """No blob with that hash in the store."""


class ArtifactCorrupt(OSError):
    """The bytes read back do not hash to the blob's address."""


class ArtifactStoreError(RuntimeError):
    """The store is misconfigured or unreachable (e.g. the S3 bucket does not exist)."""


def check_sha(sha: str) -> str:
    """`sha` itself when it is a lower-case sha256 hex digest; ValueError otherwise."""
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


def check_folder(folder: str) -> str:
    """`folder` as a key prefix ending in '/', when it is a valid object name with or without
    that '/'; ValueError otherwise (the empty folder included: blobs are not named objects)."""
    return check_name(folder.rstrip("/") if isinstance(folder, str) else folder) + "/"


def check_name(name: str) -> str:
    """`name` itself when it is a safe relative object name (no '..', no leading '/')."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(f"not a valid object name: {name!r}")
    return name


def file_chunks(path: Path) -> Iterator[bytes]:
    """The bytes of the file at `path`, CHUNK_BYTES at a time."""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    for chunk in file_chunks(path):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def verified(sha: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`chunks` passed through, checked: the last chunk is held back until the digest is known,
    and ArtifactCorrupt is raised instead of it when the bytes do not hash to `sha` (so a
    streamed download of a corrupt blob ends short of its Content-Length, visibly)."""
    digest = hashlib.sha256()
    held: bytes | None = None
    for chunk in chunks:
        if not chunk:
            continue
        digest.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if digest.hexdigest() != sha:
        raise ArtifactCorrupt(f"artifact {sha} is corrupt: its bytes hash to {digest.hexdigest()}")
    if held is not None:
        yield held


class ArtifactStore(ABC):
    """Content-addressed blobs (sha256 of their bytes) and named internal objects.

    `scratch` is a local directory for staging uploads and temporary files (on the same
    filesystem as the blobs for the local store, so a staged file can be moved in).
    """

    kind: str = "abstract"
    #: True when blobs are already on this machine's disk (a worker cache would only copy them)
    is_local: bool = False

    def __init__(self, scratch: Path | str) -> None:
        self.scratch = Path(scratch)

    # ---- primitives (backends) ----
    @abstractmethod
    def _exists(self, sha: str) -> bool: ...

    @abstractmethod
    def _put_file(self, sha: str, source: Path, size: int, media_type: str, *,
                  move: bool) -> None:
        """Store the file at `source` (whose digest is `sha`) under `sha`, atomically."""

    @abstractmethod
    def _open_chunks(self, sha: str) -> Iterator[bytes]:
        """The stored bytes of `sha`, unchecked; ArtifactNotFound when missing (raised at once)."""

    @abstractmethod
    def _delete(self, sha: str) -> None:
        """Remove the blob (no error when it is gone)."""

    @abstractmethod
    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size in bytes, last-modified POSIX time) of every stored blob (for sweeping
        orphans: compare with the `artifacts` rows and the references)."""

    @abstractmethod
    def put_object(self, name: str, data: bytes) -> None:
        """Write (or replace, atomically) the named object `name`."""

    @abstractmethod
    def get_object(self, name: str) -> bytes | None:
        """The named object's bytes, or None when there is none."""

    @abstractmethod
    def delete_object(self, name: str) -> None:
        """Remove the named object (no error when it is gone)."""

    @abstractmethod
    def list_objects(self, folder: str) -> Iterator[tuple[str, int, float]]:
        """(name, size in bytes, last-modified POSIX time in seconds) of every named object under
        `folder` (e.g. `training-state/`; a trailing '/' is implied), at any depth, in no
        particular order. An object written while the listing runs may or may not appear."""

    @abstractmethod
    def check(self) -> None:
        """Raise ArtifactStoreError when the store cannot be used (e.g. missing bucket)."""

    def describe(self) -> str:
        """Where the blobs live, for logs."""
        return self.kind

    def presigned_url(self, sha: str, *, media_type: str, filename: str | None) -> str | None:
        """A time-limited URL a client can GET the blob from directly, or None (not configured)."""
        return None

    # ---- scratch ----
    @property
    def tmp_dir(self) -> Path:
        """Local scratch space (staged uploads, files on their way into the store)."""
        d = self.scratch
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextmanager
    def staging_file(self, suffix: str = "") -> Iterator[Path]:
        """A temporary local path, removed on exit if still there."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # ---- writing ----
    def exists(self, sha: str) -> bool:
        return self._exists(check_sha(sha))

    def put_bytes(self, session: Session, data: bytes, media_type: str) -> str:
        """Store `data`, register an Artifact row (if new) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if not self._exists(sha):
            with self.staging_file() as staged:
                with staged.open("wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                self._put_file(sha, staged, len(data), media_type, move=True)
            self._forget_on_rollback(session, sha)
        self._register(session, sha, len(data), media_type)
        return sha

    def put_file(self, session: Session, source: Path | str, media_type: str, *,
                 move: bool = False) -> str:
        """Store the file at `source` (hashed in chunks, streamed to the store; multipart where
        the backend has it); `move=True` consumes the file."""
        source = Path(source)
        sha, size = hash_file(source)
        if not self._exists(sha):
            self._put_file(sha, source, size, media_type, move=move)
            self._forget_on_rollback(session, sha)
        if move:
            source.unlink(missing_ok=True)
        self._register(session, sha, size, media_type)
        return sha

    def _register(self, session: Session, sha: str, size: int, media_type: str) -> None:
        """Add the Artifact row unless it exists; safe against a concurrent insert of the same
        blob (INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite)."""
        if session.get(Artifact, sha) is not None:
            return
        values = {"sha256": sha, "size_bytes": size, "media_type": media_type}
        dialect = session.get_bind().dialect.name
        if dialect in _UPSERT_INSERTS:
            stmt = _UPSERT_INSERTS[dialect](Artifact).values(**values)
            session.execute(stmt.on_conflict_do_nothing(index_elements=["sha256"]))
        else:
            session.add(Artifact(**values))
            session.flush()

    def _forget_on_rollback(self, session: Session, sha: str) -> None:
        """A blob this session wrote is removed again if the session rolls back and no committed
        Artifact row names it (so a failed request leaves no orphan behind)."""
        bind = session.get_bind()
        engine = bind.engine  # a Connection's engine, or the Engine itself

        def rolled_back(_session: Session) -> None:
            if event.contains(session, "after_commit", committed):
                event.remove(session, "after_commit", committed)
            try:
                with engine.connect() as conn:
                    row = conn.execute(select(Artifact.sha256).where(Artifact.sha256 == sha)).first()
                if row is None:
                    self._delete(sha)
            except Exception:  # noqa: BLE001 - best effort; the blob is only wasted space
                log.exception("could not remove the orphan blob %s", sha)

        def committed(_session: Session) -> None:
            if event.contains(session, "after_rollback", rolled_back):
                event.remove(session, "after_rollback", rolled_back)

        event.listen(session, "after_rollback", rolled_back, once=True)
        event.listen(session, "after_commit", committed, once=True)

    # ---- reading (checked) ----
    def iter_chunks(self, sha: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; ArtifactNotFound at once when missing, ArtifactCorrupt
        after the last chunk when they do not hash to `sha`."""
        return verified(sha, self._open_chunks(check_sha(sha)))

    def read_bytes(self, sha: str) -> bytes:
        """The blob's bytes (checked against `sha`)."""
        return b"".join(self.iter_chunks(sha))

    def download_to(self, sha: str, target: Path) -> int:
        """Write the blob to `target` (checked, atomically: nothing at `target` on failure);
        returns its size in bytes."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, suffix=".part")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.iter_chunks(sha):
                    out.write(chunk)
                    size += len(chunk)
            os.replace(name, target)
        finally:
            Path(name).unlink(missing_ok=True)
        return size

    # ---- deleting ----
    def remove_blob(self, sha: str) -> None:
        """Remove the blob's bytes only (no row change): for operators and tests."""
        self._delete(check_sha(sha))

    @staticmethod
    def reference_count(session: Session, sha: str) -> int:
        """How many datasets, checkpoints and jobs refer to blob `sha`."""
        counts = [
            session.scalar(select(func.count()).select_from(Dataset).where(
                or_(Dataset.sha256 == sha, Dataset.source_sha256 == sha))),
            session.scalar(select(func.count()).select_from(Checkpoint).where(
                Checkpoint.sha256 == sha)),
            session.scalar(select(func.count()).select_from(Job).where(
                or_(Job.samples_sha256 == sha, Job.samples_png_sha256 == sha))),
        ]
        return sum(int(c or 0) for c in counts)

    def delete_if_unreferenced(self, session: Session, sha: str) -> bool:
        """Delete the blob and its row when nothing refers to it; True if it will be deleted.

        Call after deleting the referring row. The row deletion is part of the caller's
        transaction; the blob is removed when that transaction commits (not if it rolls back).
        """
        check_sha(sha)
        session.flush()
        if self.reference_count(session, sha) > 0:
            return False
        row = session.get(Artifact, sha)
        if row is not None:
            session.delete(row)
            session.flush()

        def remove(_session: Session) -> None:
            self._delete(sha)
            if event.contains(session, "after_rollback", forget):
                event.remove(session, "after_rollback", forget)

        def forget(_session: Session) -> None:
            if event.contains(session, "after_commit", remove):
                event.remove(session, "after_commit", remove)

        event.listen(session, "after_commit", remove, once=True)
        event.listen(session, "after_rollback", forget, once=True)
        return True
