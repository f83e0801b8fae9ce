"""A worker's bounded local cache of the blobs it reads from a remote artifact store.

Content-addressed like the store (`<dir>/ab/<sha256>`), so an entry never goes stale; filled
atomically (a `.part` file renamed into place after its sha256 was checked); capped at
BLOB_CACHE_BYTES by evicting the least recently used entries (a hit refreshes the file's mtime).
The cache lives on disk, not in memory, because the worker forks a new work horse per job: the
horses of one worker (and several workers on one host) share it. Hits, misses and evictions are
counted in `<dir>/stats.json` under an `fcntl` lock, for the hit rate in bench/ and tests.

With the local store the cache is skipped: the blob is on this disk already.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.artifacts import ArtifactCorrupt, ArtifactStore, check_sha, get_artifact_store
from core.artifacts.base import file_chunks, verified
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes_downloaded: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class BlobCache:
    """Blobs of `store` cached under `root`, at most `max_bytes` in all (0 disables the cache)."""

    def __init__(self, store: ArtifactStore, root: Path | str, max_bytes: int) -> None:
        self.store, self.root, self.max_bytes = store, Path(root), int(max_bytes)

    # ---- paths and bookkeeping ----
    def path(self, sha: str) -> Path:
        check_sha(sha)
        return self.root / sha[:2] / sha

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _count(self, **add: int) -> None:
        with self._locked():
            stats = self._read_stats()
            for key, value in add.items():
                stats[key] = stats.get(key, 0) + value
            tmp = self.root / "stats.json.tmp"
            tmp.write_text(json.dumps(stats))
            os.replace(tmp, self.root / "stats.json")

    def _read_stats(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads((self.root / "stats.json").read_text()).items()}
        except (FileNotFoundError, ValueError):
            return {}

    def stats(self) -> CacheStats:
        return CacheStats(**self._read_stats())

    def entries(self) -> list[Path]:
        """The cached blobs (files named by a sha256)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("??/*") if p.is_file() and len(p.name) == 64]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.entries())

    # ---- reading ----
    def local_path(self, sha: str) -> Path:
        """A local file holding blob `sha` (checked): from the cache, else downloaded into it.

        ArtifactNotFound when the store lacks it; ArtifactCorrupt when its bytes are wrong."""
        target = self.path(sha)
        if target.is_file():
            try:
                for _chunk in verified(sha, file_chunks(target)):
                    pass
            except ArtifactCorrupt:
                log.warning("blob cache: %s was corrupt; fetching it again", sha)
                target.unlink(missing_ok=True)
            else:
                os.utime(target)  # most recently used
                self._count(hits=1)
                return target
        size = self.store.download_to(sha, target)
        self._count(misses=1, bytes_downloaded=size)
        self.evict(keep=target)
        return target

    def read_bytes(self, sha: str) -> bytes:
        """The blob's bytes (checked), through the cache; straight from a local store."""
        if self.store.is_local or self.max_bytes <= 0:
            return self.store.read_bytes(sha)
        return self.local_path(sha).read_bytes()

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the cache fits `max_bytes`; returns how many.
        `keep` (the entry just fetched) is never evicted, even when it alone exceeds the cap."""
        with self._locked():
            entries = []
            for p in self.entries():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            removed = 0
            for _, size, p in sorted(entries, key=lambda e: e[0]):
                if total <= self.max_bytes:
                    break
                if keep is not None and p == keep:
                    continue
                p.unlink(missing_ok=True)
                total -= size
                removed += 1
        if removed:
            self._count(evictions=removed)
        return removed


def worker_blob_cache(settings: Settings | None = None) -> BlobCache:
    """The cache of this worker's settings: BLOB_CACHE_DIR (default DATA_DIR/blob-cache),
    capped at BLOB_CACHE_BYTES, in front of the configured artifact store."""
    settings = settings or get_settings()
    return BlobCache(get_artifact_store(settings), settings.resolved_blob_cache_dir,
                     settings.blob_cache_bytes)


