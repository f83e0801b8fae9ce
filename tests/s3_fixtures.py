"""pytest plugin: a real S3 server for tests — moto's standalone server (`moto[server]`), started
by the tests themselves on 127.0.0.1 at a free port, once per session.

- `s3_server` (session): the endpoint URL; exports dummy AWS credentials and region for boto3.
- `s3_bucket` (session): a bucket made on it (the tests make it; the service never creates one).
- `s3_artifact_env(prefix)`: the environment a process needs to use it as its artifact store.
- `artifact_backend` (function, parametrized local / s3) for tests that run on both stores.

Setting TEST_ARTIFACT_BACKEND=s3 makes tests/conftest.py's `settings` (and so every API and
worker test) use the S3 store, each test under its own key prefix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

TEST_BUCKET = "neural-entropy-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `python -m moto.server` on 127.0.0.1; its endpoint URL."""
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    env = {**os.environ, **CREDENTIALS}
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1.0)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start:\n{log.read_text()}") from None
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def s3_client(endpoint: str) -> object:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def s3_bucket(s3_server: str) -> str:
    s3_client(s3_server).create_bucket(Bucket=TEST_BUCKET)  # type: ignore[attr-defined]
    return TEST_BUCKET


def s3_artifact_env(endpoint: str, bucket: str, prefix: str) -> dict[str, str]:
    """Environment variables for a process whose artifact store is `s3://bucket/prefix`."""
    return {"ARTIFACT_URL": f"s3://{bucket}/{prefix}", "AWS_ENDPOINT_URL": endpoint,
            **CREDENTIALS}


def s3_keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    """The keys under `prefix` (relative to it), sorted."""
    client = s3_client(endpoint)
    out: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=bucket, Prefix=prefix):
        out.extend(o["Key"][len(prefix):] for o in page.get("Contents", []))
    return sorted(out)


def new_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/"


def test_artifact_backend() -> str:
    return os.environ.get("TEST_ARTIFACT_BACKEND", "local").strip().lower() or "local"


test_artifact_backend.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(params=["local", "s3"])
def artifact_backend(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over the two artifact stores."""
    return str(request.param)
