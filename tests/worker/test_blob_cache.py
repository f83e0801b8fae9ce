"""The worker's blob cache in front of the S3 store (a real moto server): one download for many
reads, hits counted across processes' shared stats, LRU eviction under the size cap, a corrupt
entry fetched again; with the local store the cache is bypassed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.artifacts import ArtifactNotFound, get_artifact_store
from core.settings import Settings
from worker.blob_cache import BlobCache, worker_blob_cache


@pytest.fixture
def s3_settings(settings: Settings, artifact_backend: str) -> Settings:
    if artifact_backend != "s3":
        pytest.skip("the cache fronts remote stores")
    return settings


@pytest.mark.parametrize("artifact_backend", ["s3"], indirect=True)
def test_ten_reads_download_once(s3_settings: Settings, session: Session) -> None:
    store = get_artifact_store(s3_settings)
    blob = os.urandom(200_000)
    sha = store.put_bytes(session, blob, "application/octet-stream")
    session.commit()
    cache = worker_blob_cache(s3_settings)
    assert [cache.read_bytes(sha) == blob for _ in range(10)] == [True] * 10
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.bytes_downloaded) == (1, 9, len(blob))
    assert stats.hit_rate == pytest.approx(0.9)
    # another cache object on the same directory (another work horse) shares entries and counts
    again = BlobCache(store, cache.root, cache.max_bytes)
    assert again.read_bytes(sha) == blob and again.stats().hits == 10


@pytest.mark.parametrize("artifact_backend", ["s3"], indirect=True)
def test_least_recently_used_entries_go_first(s3_settings: Settings, session: Session,
                                              tmp_path: Path) -> None:
    store = get_artifact_store(s3_settings)
    blobs = [os.urandom(1000) + bytes([i]) for i in range(4)]
    shas = [store.put_bytes(session, b, "application/octet-stream") for b in blobs]
    session.commit()
    cache = BlobCache(store, tmp_path / "cache", max_bytes=3 * 1001)
    for sha in shas[:3]:
        cache.read_bytes(sha)
        time.sleep(0.01)
    cache.read_bytes(shas[0])  # now the most recently used
    time.sleep(0.01)
    cache.read_bytes(shas[3])  # over the cap: the oldest (shas[1]) goes
    cached = {p.name for p in cache.entries()}
    assert cached == {shas[0], shas[2], shas[3]}
    assert cache.size_bytes() <= cache.max_bytes and cache.stats().evictions == 1


@pytest.mark.parametrize("artifact_backend", ["s3"], indirect=True)
def test_corrupt_entry_is_fetched_again(s3_settings: Settings, session: Session,
                                        tmp_path: Path) -> None:
    store = get_artifact_store(s3_settings)
    sha = store.put_bytes(session, b"good bytes" * 50, "application/octet-stream")
    session.commit()
    cache = BlobCache(store, tmp_path / "cache", max_bytes=10**6)
    cache.read_bytes(sha)
    cache.path(sha).write_bytes(b"bit rot" * 50)
    assert cache.read_bytes(sha) == b"good bytes" * 50
    assert cache.stats().misses == 2
    with pytest.raises(ArtifactNotFound):
        cache.read_bytes("0" * 64)


@pytest.mark.parametrize("artifact_backend", ["local"], indirect=True)
def test_local_store_is_read_directly(settings: Settings, session: Session,
                                      artifact_backend: str) -> None:
    store = get_artifact_store(settings)
    sha = store.put_bytes(session, b"local", "text/plain")
    session.commit()
    cache = worker_blob_cache(settings)
    assert cache.read_bytes(sha) == b"local"
    assert cache.entries() == [] and cache.stats().misses == 0
