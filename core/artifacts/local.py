"""The local artifact store (the embedded default): blobs at ROOT/ab/<sha256>, named objects at
ROOT/<name>, scratch files in ROOT/tmp.

Writes are atomic (a file in ROOT/tmp, fsync, `os.replace`), so a reader never sees a partial
blob. ROOT is ARTIFACT_DIR (default DATA_DIR/artifacts).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.artifacts.base import (
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreError,
    check_folder,
    check_name,
    check_sha,
    file_chunks,
)


class LocalArtifactStore(ArtifactStore):
    """Blobs under `root`, addressed by the sha256 hex digest of their bytes."""

    kind = "local"
    is_local = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        super().__init__(self.root / "tmp")

    def describe(self) -> str:
        return f"local:{self.root}"

    # ---- locations ----
    def path(self, sha: str) -> Path:
        """Where the blob with digest `sha` lives (it may not exist)."""
        check_sha(sha)
        return self.root / sha[:2] / sha

    def object_path(self, name: str) -> Path:
        return self.root / check_name(name)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.tmp_dir  # noqa: B018 - creates it
        except OSError as exc:
            raise ArtifactStoreError(f"artifact directory {self.root} is not usable: {exc}") from exc

    # ---- primitives ----
    def _exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def _put_file(self, sha: str, source: Path, size: int, media_type: str, *,
                  move: bool) -> None:
        target = self.path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move and source.parent.resolve() == self.tmp_dir.resolve():
            os.replace(source, target)  # same filesystem: an atomic rename
            return
        self._write_atomically(target, source)

    def _write_atomically(self, target: Path, source: Path) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(name, target)
        finally:
            Path(name).unlink(missing_ok=True)

    def _open_chunks(self, sha: str) -> Iterator[bytes]:
        path = self.path(sha)
        try:
            fh = path.open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"artifact {sha} is missing from the store") from exc
        fh.close()
        return file_chunks(path)

    def _delete(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("??/*"):
            if path.parent.name == path.name[:2] and len(path.name) == 64:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield path.name, st.st_size, st.st_mtime

    # ---- named objects ----
    def put_object(self, name: str, data: bytes) -> None:
        target = self.object_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def get_object(self, name: str) -> bytes | None:
        try:
            return self.object_path(name).read_bytes()
        except FileNotFoundError:
            return None

    def delete_object(self, name: str) -> None:
        self.object_path(name).unlink(missing_ok=True)

    def list_objects(self, folder: str) -> Iterator[tuple[str, int, float]]:
        """Files under ROOT/<folder>, with their mtime (the temporary files of writes in progress
        or cut short included: they are named objects' files too, `tmp*.tmp`)."""
        directory = self.root / check_folder(folder)
        if not directory.is_dir():
            return
        for path in directory.rglob("*"):
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime
