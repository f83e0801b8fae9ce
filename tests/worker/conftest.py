"""Fixtures for the worker tests, on top of tests/conftest.py's `settings` (a migrated SQLite file
database and a PostgreSQL schema when it answers, the bundled Redis flushed, a fresh DATA_DIR),
wired into `core.settings` through the environment as in production."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings, get_settings

PROGRESS_INTERVAL_FOR_TESTS = "0.2"  # seconds between progress writes


@dataclass
class ServiceEnv:
    backend: str  # sqlite | postgresql
    database_url: str
    redis_url: str
    data_dir: Path


@pytest.fixture
def service_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceEnv]:
    """The test database + bundled Redis + DATA_DIR, with a short progress interval."""
    monkeypatch.setenv("PROGRESS_INTERVAL_SECONDS", PROGRESS_INTERVAL_FOR_TESTS)
    get_settings.cache_clear()
    s = get_settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    backend = "sqlite" if s.resolved_database_url.startswith("sqlite") else "postgresql"
    try:
        yield ServiceEnv(backend, s.resolved_database_url, s.resolved_redis_url, s.data_dir)
    finally:
        get_settings.cache_clear()
