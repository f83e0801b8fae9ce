"""The S3 artifact store (`ARTIFACT_URL=s3://bucket/prefix`), for MinIO, Ceph, R2 and AWS alike.

boto3 takes the endpoint from AWS_ENDPOINT_URL (unset: AWS itself), the credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any other source of boto3's chain) and the region
from AWS_DEFAULT_REGION. The bucket must exist: the service never creates it, and says so when it
is missing. Keys: `<prefix>ab/<sha256>` for blobs, `<prefix><name>` for named objects.

Uploads stream from a local file with boto3's managed transfer, which switches to a multipart
upload above MULTIPART_BYTES (and aborts it on failure, so no part is left behind); an S3 PUT
becomes visible only when complete, so readers never see a partial blob. Reads stream the body
in chunks; the caller (`ArtifactStore.iter_chunks`) checks the sha256. The boto3 client is made
per process (a worker forks a horse per job, and clients are not fork-safe).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from core.artifacts.base import (
    CHUNK_BYTES,
    ArtifactCorrupt,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreError,
    check_folder,
    check_name,
    check_sha,
)

MULTIPART_BYTES = 8 * 1024 * 1024  # objects above this go up in parts of this size
_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of `s3://bucket[/prefix]`; ValueError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"ARTIFACT_URL must look like s3://bucket/prefix, got {url!r}")
    prefix = parsed.path.strip("/")
    return parsed.netloc, (prefix + "/" if prefix else "")


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[int, Any] = {}  # process id -> boto3 Session


def _new_client(**kwargs: Any) -> Any:
    """A boto3 S3 client from this process's one Session: botocore then loads the S3 service
    model once per process rather than once per store (several MB of objects per fresh
    Session; a test run makes hundreds of stores). A forked child makes its own Session, and
    the lock serialises client creation, which a Session does not make thread-safe."""
    import boto3

    with _SESSION_LOCK:
        session = _SESSIONS.get(os.getpid())
        if session is None:
            _SESSIONS.clear()
            session = _SESSIONS[os.getpid()] = boto3.session.Session()
        return session.client("s3", **kwargs)


class S3ArtifactStore(ArtifactStore):
    """Blobs in `bucket` under `prefix`; `scratch` is a local directory for staging."""

    kind = "s3"
    is_local = False

    def __init__(self, bucket: str, prefix: str, scratch: Path | str, *,
                 endpoint_url: str | None = None, region: str | None = None,
                 presign_seconds: int | None = None,
                 presign_endpoint_url: str | None = None) -> None:
        super().__init__(scratch)
        self.bucket, self.prefix = bucket, prefix
        self.endpoint_url, self.region = endpoint_url or None, region or None
        self.presign_seconds = presign_seconds
        self.presign_endpoint_url = presign_endpoint_url or self.endpoint_url
        self._clients: dict[tuple[int, str | None], Any] = {}

    def describe(self) -> str:
        where = self.endpoint_url or "aws"
        return f"s3://{self.bucket}/{self.prefix} at {where}"

    # ---- client ----
    def _client(self, endpoint_url: str | None = None) -> Any:
        from botocore.config import Config

        endpoint = endpoint_url or self.endpoint_url
        key = (os.getpid(), endpoint)
        client = self._clients.get(key)
        if client is None:
            config = Config(s3={"addressing_style": "path"} if endpoint else {},
                            retries={"max_attempts": 5, "mode": "standard"},
                            signature_version="s3v4")
            client = _new_client(endpoint_url=endpoint, region_name=self.region, config=config)
            self._clients = {k: v for k, v in self._clients.items() if k[0] == os.getpid()}
            self._clients[key] = client
        return client

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_BYTES,
                              multipart_chunksize=MULTIPART_BYTES, max_concurrency=4)

    def _fail(self, exc: Exception, what: str) -> Exception:
        """Our error for a boto3 failure: a missing bucket or a refused request names the fix."""
        code = _code(exc)
        if code in ("NoSuchBucket",):
            return ArtifactStoreError(
                f"the S3 bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}; "
                "create it first (the service never creates buckets)")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return ArtifactStoreError(
                f"S3 refused {what} in bucket {self.bucket!r} ({code}); check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket policy")
        return ArtifactStoreError(f"S3 {what} failed: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise ArtifactStoreError(
                    f"the S3 bucket {self.bucket!r} does not exist at "
                    f"{self.endpoint_url or 'AWS'}; create it first (the service never creates "
                    "buckets)") from None
            raise self._fail(exc, "HEAD bucket") from None
        except BotoCoreError as exc:
            raise ArtifactStoreError(
                f"S3 at {self.endpoint_url or 'AWS'} is not reachable: {exc}") from None

    # ---- keys ----
    def key(self, sha: str) -> str:
        check_sha(sha)
        return f"{self.prefix}{sha[:2]}/{sha}"

    def object_key(self, name: str) -> str:
        return self.prefix + check_name(name)

    # ---- primitives ----
    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self._client().head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._fail(exc, f"HEAD {key}") from None

    def _exists(self, sha: str) -> bool:
        return self._head(self.key(sha)) is not None

    def _put_file(self, sha: str, source: Path, size: int, media_type: str, *,
                  move: bool) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().upload_file(
                str(source), self.bucket, self.key(sha),
                ExtraArgs={"ContentType": media_type, "Metadata": {"sha256": sha}},
                Config=self._transfer_config())
        except (ClientError, S3UploadFailedError, BotoCoreError) as exc:
            if "NoSuchBucket" in str(exc):
                raise ArtifactStoreError(
                    f"the S3 bucket {self.bucket!r} does not exist at "
                    f"{self.endpoint_url or 'AWS'}; create it first (the service never creates "
                    "buckets)") from None
            raise self._fail(exc, f"upload of {sha}") from None

    def _open_chunks(self, sha: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self._client().get_object(Bucket=self.bucket, Key=self.key(sha))["Body"]
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ArtifactNotFound(f"artifact {sha} is missing from the store") from None
            raise self._fail(exc, f"GET {sha}") from None
        return self._body_chunks(body)

    @staticmethod
    def _body_chunks(body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    def _delete(self, sha: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client().delete_object(Bucket=self.bucket, Key=self.key(sha))
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise self._fail(exc, f"DELETE {sha}") from None

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        from botocore.exceptions import ClientError

        pages = self._client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix):]
                    head, _, sha = rel.partition("/")
                    if len(sha) == 64 and head == sha[:2]:
                        yield sha, int(obj["Size"]), obj["LastModified"].timestamp()
        except ClientError as exc:
            raise self._fail(exc, "LIST") from None

    # ---- named objects ----
    def put_object(self, name: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client().put_object(
                Bucket=self.bucket, Key=self.object_key(name), Body=data,
                Metadata={"sha256": hashlib.sha256(data).hexdigest()})
        except ClientError as exc:
            raise self._fail(exc, f"PUT {name}") from None

    def get_object(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            out = self._client().get_object(Bucket=self.bucket, Key=self.object_key(name))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._fail(exc, f"GET {name}") from None
        data: bytes = out["Body"].read()
        expected = (out.get("Metadata") or {}).get("sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ArtifactCorrupt(f"object {name} is corrupt (sha256 differs from its metadata)")
        return data

    def delete_object(self, name: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client().delete_object(Bucket=self.bucket, Key=self.object_key(name))
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise self._fail(exc, f"DELETE {name}") from None

    def list_objects(self, folder: str) -> Iterator[tuple[str, int, float]]:
        """Keys under `<prefix><folder>/` with their LastModified (the S3 server's clock)."""
        from botocore.exceptions import ClientError

        start = self.prefix + check_folder(folder)
        pages = self._client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield (obj["Key"][len(self.prefix):], int(obj["Size"]),
                           obj["LastModified"].timestamp())
        except ClientError as exc:
            raise self._fail(exc, f"LIST {folder}") from None

    # ---- downloads ----
    def presigned_url(self, sha: str, *, media_type: str, filename: str | None) -> str | None:
        if not self.presign_seconds:
            return None
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(sha),
                                  "ResponseContentType": media_type}
        if filename:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        url: str = self._client(self.presign_endpoint_url).generate_presigned_url(
            "get_object", Params=params, ExpiresIn=int(self.presign_seconds))
        return url
