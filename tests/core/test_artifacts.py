"""The artifact store, on both backends (the local directory and S3 on a real moto server):
content addressing, checked reads, multipart uploads, no orphan after a rollback, deletion after
commit, named objects; S3 never creates its bucket and says so."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.artifacts import (
    ArtifactCorrupt,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreError,
    LocalArtifactStore,
    S3ArtifactStore,
    get_artifact_store,
    store_for,
)
from core.artifacts.s3 import MULTIPART_BYTES
from core.settings import Settings
from core.tables import Artifact
from tests.conftest import stored_blobs
from tests.s3_fixtures import s3_client


@pytest.fixture
def store(settings: Settings, artifact_backend: str) -> ArtifactStore:
    s = get_artifact_store(settings)
    assert s.kind == artifact_backend
    s.check()
    return s


def _corrupt(store: ArtifactStore, sha: str, data: bytes) -> None:
    """Overwrite the stored bytes of `sha` behind the store's back."""
    if isinstance(store, LocalArtifactStore):
        store.path(sha).write_bytes(data)
    else:
        assert isinstance(store, S3ArtifactStore)
        s3_client(store.endpoint_url or "").put_object(  # type: ignore[attr-defined]
            Bucket=store.bucket, Key=store.key(sha), Body=data)


def test_same_bytes_are_stored_once_and_read_back(store: ArtifactStore, session: Session,
                                                  settings: Settings) -> None:
    data = os.urandom(3000)
    sha = store.put_bytes(session, data, "application/octet-stream")
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.put_bytes(session, data, "application/octet-stream") == sha
    session.commit()
    assert store.exists(sha) and store.read_bytes(sha) == data
    assert stored_blobs(settings) == [f"{sha[:2]}/{sha}"]
    row = session.get(Artifact, sha)
    assert row is not None and row.size_bytes == 3000


def test_large_files_stream_up_in_parts_and_come_back_whole(store: ArtifactStore,
                                                            session: Session,
                                                            tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    data = os.urandom(2 * MULTIPART_BYTES + 12345)
    source.write_bytes(data)
    sha = store.put_file(session, source, "application/octet-stream")
    session.commit()
    assert source.exists()  # copied, not consumed
    chunks = list(store.iter_chunks(sha))
    assert len(chunks) > 1 and b"".join(chunks) == data
    if isinstance(store, S3ArtifactStore):  # a multipart upload's ETag is "<md5>-<parts>"
        head = s3_client(store.endpoint_url or "").head_object(  # type: ignore[attr-defined]
            Bucket=store.bucket, Key=store.key(sha))
        assert head["ETag"].strip('"').endswith("-3")
        assert head["Metadata"]["sha256"] == sha
    target = tmp_path / "out" / "copy.bin"
    assert store.download_to(sha, target) == len(data) and target.read_bytes() == data


def test_reads_are_checked_against_the_hash(store: ArtifactStore, session: Session,
                                            tmp_path: Path) -> None:
    data = b"the real bytes" * 100
    sha = store.put_bytes(session, data, "application/octet-stream")
    session.commit()
    _corrupt(store, sha, b"tampered bytes" * 100)
    with pytest.raises(ArtifactCorrupt):
        store.read_bytes(sha)
    streamed: list[bytes] = []
    with pytest.raises(ArtifactCorrupt):
        for chunk in store.iter_chunks(sha):
            streamed.append(chunk)
    assert sum(map(len, streamed)) < len(data)  # the stream ends short: never all wrong bytes
    with pytest.raises(ArtifactCorrupt):
        store.download_to(sha, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_missing_blob_is_not_found(store: ArtifactStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(sha)
    with pytest.raises(ArtifactNotFound):
        store.read_bytes(sha)
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


def test_a_rolled_back_write_leaves_no_orphan(store: ArtifactStore, session: Session,
                                              settings: Settings) -> None:
    kept = store.put_bytes(session, b"kept", "text/plain")
    session.commit()
    orphan = store.put_bytes(session, b"from a failed request", "text/plain")
    again = store.put_bytes(session, b"kept", "text/plain")  # existed before: must survive
    assert store.exists(orphan)
    session.rollback()
    assert not store.exists(orphan)
    assert store.exists(kept) and again == kept
    assert stored_blobs(settings) == [f"{kept[:2]}/{kept}"]
    assert session.scalars(select(Artifact.sha256)).all() == [kept]


def test_unreferenced_blob_goes_on_commit_only(store: ArtifactStore, session: Session) -> None:
    sha = store.put_bytes(session, b"to delete", "text/plain")
    session.commit()
    assert store.delete_if_unreferenced(session, sha)
    session.rollback()
    assert store.exists(sha)  # the deletion was rolled back
    assert store.delete_if_unreferenced(session, sha)
    session.commit()
    assert not store.exists(sha) and session.get(Artifact, sha) is None


def test_blobs_are_listed_without_named_objects(store: ArtifactStore, session: Session) -> None:
    shas = sorted(store.put_bytes(session, bytes([i]) * 10, "x/y") for i in range(3))
    session.commit()
    store.put_object("training-state/j.state", b"state")
    listed = sorted(store.list_blobs())
    assert [sha for sha, _, _ in listed] == shas
    assert all(size == 10 and mtime > 0 for _, size, mtime in listed)


def test_named_objects_replace_and_delete(store: ArtifactStore) -> None:
    name = "training-state/job-1.state"
    assert store.get_object(name) is None
    store.put_object(name, b"one")
    store.put_object(name, b"two")
    assert store.get_object(name) == b"two"
    store.delete_object(name)
    store.delete_object(name)  # gone already: fine
    assert store.get_object(name) is None
    for bad in ("../escape", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            store.put_object(bad, b"x")


def test_named_objects_are_listed_by_folder_with_size_and_age(store: ArtifactStore,
                                                              session: Session) -> None:
    before = time.time()
    store.put_object("training-state/a.state", b"a" * 3)
    store.put_object("training-state/deep/b.state", b"b" * 5)
    store.put_object("training-state-not/c.state", b"c")  # a name that merely starts alike
    store.put_object("other/d.state", b"d")
    store.put_bytes(session, b"a blob", "x/y")  # blobs are not named objects
    session.commit()
    listed = sorted(store.list_objects("training-state/"))
    assert [(name, size) for name, size, _ in listed] == [
        ("training-state/a.state", 3), ("training-state/deep/b.state", 5)]
    # last-modified POSIX seconds (S3: the server's clock, whole seconds)
    assert all(before - 5 <= mtime <= time.time() + 5 for _, _, mtime in listed)
    assert sorted(store.list_objects("training-state")) == listed  # the '/' is implied
    store.delete_object("training-state/a.state")
    assert [name for name, _, _ in store.list_objects("training-state/")] == [
        "training-state/deep/b.state"]
    assert list(store.list_objects("nothing-here/")) == []
    for bad in ("", "/", "../x", "/abs/"):
        with pytest.raises(ValueError):
            list(store.list_objects(bad))


def test_s3_store_never_creates_its_bucket(s3_server: str, tmp_path: Path,
                                           session: Session) -> None:
    settings = Settings(data_dir=tmp_path, artifact_url="s3://no-such-bucket/p",
                        aws_endpoint_url=s3_server)
    store = store_for(settings)
    with pytest.raises(ArtifactStoreError, match="does not exist.*never creates"):
        store.check()
    with pytest.raises(ArtifactStoreError, match="does not exist"):
        store.put_bytes(session, b"data", "text/plain")
    names = [b["Name"] for b in s3_client(s3_server).list_buckets()["Buckets"]]  # type: ignore[attr-defined]
    assert "no-such-bucket" not in names


def test_artifact_url_must_name_a_bucket(tmp_path: Path) -> None:
    for url in ("s3://", "gs://bucket/p", "http://x"):
        with pytest.raises(ValueError, match="ARTIFACT_URL"):
            store_for(Settings(data_dir=tmp_path, artifact_url=url))
