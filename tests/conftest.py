"""Shared fixtures: databases (SQLite file AND PostgreSQL), the app with API keys, bundled Redis.

- `database_url` (module scope, parametrized sqlite / postgres): a fresh database per test module,
  built by the Alembic migrations (so every API test also checks them). PostgreSQL is
  TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test) with a fresh
  schema; when it does not answer the tests are SKIPPED loudly, or FAIL when
  REQUIRE_EXTERNAL_SERVICES=1.
- `settings` (function): Settings pointing at that database, the bundled Redis (flushed) and a
  fresh artifact dir — or, with TEST_ARTIFACT_BACKEND=s3, a fresh key prefix on the test S3
  server (tests/s3_fixtures.py); also exported to the environment so `get_settings()` agrees.
  Every table is emptied after the test.
- `client` (no key), `api` (owner A's key), `other_headers` (owner B's key).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, func, select, text
from sqlalchemy.orm import Session

from app.main import create_app
from core.db import engine_for
from core.keys import create_api_key
from core.settings import Settings, get_settings
from core.tables import Base

pytest_plugins = ["tests.redis_fixtures", "tests.s3_fixtures"]

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_target() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)


def postgres_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres_probe() -> str | None:
    """None when TEST_POSTGRES_URL answers, else why not."""
    try:
        engine = create_engine(postgres_target(), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means unavailable
        return f"{postgres_target()} does not answer ({type(exc).__name__}: {exc})"
    return None


def migrate(url: str) -> None:
    from alembic import command

    from core.migrations import alembic_config

    command.upgrade(alembic_config(url), "head")


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 postgres_probe: str | None) -> Iterator[str]:
    """A fresh, migrated database for this module: SQLite file or a PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        migrate(url)
        yield url
        engine_for(url).dispose()
        return
    if postgres_probe is not None:
        from tests.redis_fixtures import skip_or_fail_unavailable  # after the plugin registered

        skip_or_fail_unavailable("PostgreSQL (TEST_POSTGRES_URL)", postgres_probe)
    schema = f"at_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_target())
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = postgres_schema_url(postgres_target(), schema)
    try:
        migrate(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def truncate_all(url: str) -> None:
    with Session(engine_for(url)) as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))
        session.commit()


@pytest.fixture
def artifact_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The artifact store variables of `settings`: {} (local, ARTIFACT_DIR) or an S3 prefix,
    by the test's `artifact_backend` parameter when it has one, else TEST_ARTIFACT_BACKEND."""
    from tests.s3_fixtures import new_prefix, s3_artifact_env, test_artifact_backend

    backend = (request.getfixturevalue("artifact_backend")
               if "artifact_backend" in request.fixturenames else test_artifact_backend())
    if backend == "local":
        return {}
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return s3_artifact_env(endpoint, bucket, new_prefix())


@pytest.fixture
def settings(database_url: str, bundled_redis: Any, bundled_redis_url: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch, artifact_env: dict[str, str]) -> Iterator[Settings]:
    data_dir = tmp_path / "data"
    env = {"DATA_DIR": str(data_dir), "DATABASE_URL": database_url,
           "REDIS_URL": bundled_redis_url, "ARTIFACT_DIR": str(data_dir / "artifacts"),
           **artifact_env}
    if not artifact_env:
        monkeypatch.delenv("ARTIFACT_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield Settings()
    finally:
        get_settings.cache_clear()
        truncate_all(database_url)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """A session on the test database (for arranging rows and checking what changed)."""
    with Session(engine_for(settings.resolved_database_url), expire_on_commit=False) as s:
        yield s


def _new_key(settings: Settings, name: str) -> tuple[str, str]:
    with Session(engine_for(settings.resolved_database_url)) as s:
        owner, key = create_api_key(s, name)
        s.commit()
        return owner.id, key


@pytest.fixture
def owner_key(settings: Settings) -> tuple[str, str]:
    """(owner id, plaintext key) of owner A."""
    return _new_key(settings, "alice")


@pytest.fixture
def other_key(settings: Settings) -> tuple[str, str]:
    return _new_key(settings, "bob")


@pytest.fixture
def other_headers(other_key: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {other_key[1]}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app, no API key."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def api(client: TestClient, owner_key: tuple[str, str]) -> TestClient:
    """The app with owner A's key on every request."""
    client.headers["Authorization"] = f"Bearer {owner_key[1]}"
    return client


def stored_blobs(settings: Settings) -> list[str]:
    """Every blob and object in the settings' artifact store (local files or S3 keys), except
    the local store's scratch directory."""
    from tests.s3_fixtures import s3_keys

    url = settings.artifact_url or ""
    if url.startswith("s3://"):
        from core.artifacts import parse_s3_url

        bucket, prefix = parse_s3_url(url)
        assert settings.aws_endpoint_url
        return s3_keys(settings.aws_endpoint_url, bucket, prefix)
    root = settings.resolved_artifact_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] != "tmp") if root.exists() else []


@pytest.fixture
def state(settings: Settings) -> Callable[[], dict[str, Any]]:
    """A snapshot of row counts per table and of the blobs in the artifact store."""

    def snapshot() -> dict[str, Any]:
        counts: dict[str, Any] = {}
        with Session(engine_for(settings.resolved_database_url)) as s:
            for table in Base.metadata.sorted_tables:
                counts[table.name] = s.scalar(select(func.count()).select_from(table))
        counts["blobs"] = stored_blobs(settings)
        return counts

    return snapshot
