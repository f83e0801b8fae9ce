"""Content-addressed artifact store: blobs live at ROOT/ab/<sha256> and have an `Artifact` row.

Writes are atomic (temporary file in ROOT/tmp, fsync, `os.replace`), so a reader never sees a
partial blob, and writing the same bytes twice stores them once. Rows are added to the caller's
session (the caller commits). `delete_if_unreferenced` removes a blob only when no dataset,
checkpoint or job refers to it any more.

Used by the API (uploads, downloads) and by the worker (checkpoints, samples).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import event, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.settings import Settings, get_settings
from core.tables import Artifact, Checkpoint, Dataset, Job

_UPSERT_INSERTS: dict[str, Any] = {"postgresql": pg_insert, "sqlite": sqlite_insert}
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1024 * 1024


class ArtifactNotFound(FileNotFoundError):
    """No blob with that hash in the store."""


def _chunks(path: Path) -> Iterator[bytes]:
    """The bytes of the file at `path`, CHUNK_BYTES at a time."""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


class ArtifactStore:
    """Blobs under `root`, addressed by the sha256 hex digest of their bytes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # ---- locations ----
    def path(self, sha: str) -> Path:
        """Where the blob with digest `sha` lives (it may not exist)."""
        _check_sha(sha)
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same filesystem (so staged files can be moved in atomically)."""
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextmanager
    def staging_file(self, suffix: str = "") -> Iterator[Path]:
        """A temporary path in the store's tmp dir, removed on exit if still there."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # ---- writing ----
    def put_bytes(self, session: Session, data: bytes, media_type: str) -> str:
        """Store `data`, register an Artifact row (if new) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if not target.is_file():
            self._write_new(target, [data])
        self._register(session, sha, len(data), media_type)
        return sha

    def put_file(self, session: Session, source: Path | str, media_type: str, *,
                 move: bool = False) -> str:
        """Store the file at `source` (hashed in chunks); `move=True` moves instead of copying."""
        source = Path(source)
        digest = hashlib.sha256()
        size = 0
        for chunk in _chunks(source):
            digest.update(chunk)
            size += len(chunk)
        sha = digest.hexdigest()
        target = self.path(sha)
        if not target.is_file():
            if move:
                self._move_into_place(source, target)
            else:
                self._write_new(target, _chunks(source))
        elif move:
            source.unlink(missing_ok=True)
        self._register(session, sha, size, media_type)
        return sha

    def _write_new(self, target: Path, chunks: Iterable[bytes]) -> None:
        """Write `chunks` to a temporary file, fsync it and move it to `target` atomically."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            self._move_into_place(Path(name), target)
        finally:
            Path(name).unlink(missing_ok=True)

    def _move_into_place(self, tmp: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)

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

    # ---- reading ----
    def open(self, sha: str) -> BinaryIO:
        """The blob opened for binary reading; ArtifactNotFound when it is missing."""
        try:
            return self.path(sha).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"artifact {sha} is missing from the store") from exc

    def read_bytes(self, sha: str) -> bytes:
        with self.open(sha) as fh:
            return fh.read()

    # ---- deleting ----
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
        transaction; the file is removed when that transaction commits (not if it rolls back).
        """
        session.flush()
        if self.reference_count(session, sha) > 0:
            return False
        row = session.get(Artifact, sha)
        if row is not None:
            session.delete(row)
            session.flush()
        path = self.path(sha)

        def unlink(_session: Session) -> None:
            path.unlink(missing_ok=True)
            if event.contains(session, "after_rollback", forget):
                event.remove(session, "after_rollback", forget)

        def forget(_session: Session) -> None:
            if event.contains(session, "after_commit", unlink):
                event.remove(session, "after_commit", unlink)

        event.listen(session, "after_commit", unlink, once=True)
        event.listen(session, "after_rollback", forget, once=True)
        return True


def get_artifact_store(settings: Settings | None = None) -> ArtifactStore:
    """The store at ARTIFACT_DIR (default DATA_DIR/artifacts) of `settings` (or the process's)."""
    settings = settings or get_settings()
    root = settings.resolved_artifact_dir
    root.mkdir(parents=True, exist_ok=True)
    return ArtifactStore(root)
