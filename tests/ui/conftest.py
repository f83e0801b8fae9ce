"""Browser fixtures: the system Chromium driven by Playwright, and a real embedded stack.

- `chromium_path`: CHROMIUM_PATH, else `chromium` / `chromium-browser` on PATH (Debian's
  `chromium` package; .ci/run installs it). Playwright is used with `executable_path` only: no
  browser is ever downloaded. Without a browser (or without Playwright) the tests are SKIPPED
  loudly, and FAIL when REQUIRE_EXTERNAL_SERVICES=1.
- `ui_stack` (module): what `make run` starts (`python -m runner`: SQLite, the bundled Redis, one
  worker, the API) in a temporary DATA_DIR; yields (base URL, owner A's key, owner B's key).
- `browser` (module): headless Chromium; `screenshot_dir`: UI_SCREENSHOT_DIR or a temp dir.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import clean_env, free_port, http_ok, spawn, stop, wait_until
from tests.e2e.stack import new_key
from tests.redis_fixtures import skip_or_fail_unavailable

START_TIMEOUT = 300.0  # generous: shared CI machines start slowly


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        skip_or_fail_unavailable("Chromium (browser tests)",
                                 "no `chromium` on PATH and no CHROMIUM_PATH (apt-get install "
                                 "chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        skip_or_fail_unavailable("Playwright (browser tests)",
                                 f"cannot import playwright ({exc}); pip install -e '.[dev]'")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save screenshots: UI_SCREENSHOT_DIR, or a temporary directory."""
    explicit = os.environ.get("UI_SCREENSHOT_DIR")
    path = Path(explicit) if explicit else tmp_path_factory.mktemp("ui-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class UiStack:
    base_url: str
    key: str
    other_key: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()[-8000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def ui_stack(chromium_path: str) -> Iterator[UiStack]:
    """`python -m runner` in a temporary DATA_DIR (short path: its Redis socket lives there)."""
    data_dir = Path(tempfile.mkdtemp(prefix="ne-ui-"))
    port = free_port()
    log = data_dir / "run.log"
    proc = spawn(["-m", "runner"], clean_env(DATA_DIR=str(data_dir), PORT=str(port),
                                             PROGRESS_INTERVAL_SECONDS="0.25"), log)
    base = f"http://127.0.0.1:{port}"
    try:
        ok = wait_until(lambda: http_ok(f"{base}/readyz") or proc.poll() is not None,
                        START_TIMEOUT, 0.2)
        assert ok and proc.poll() is None, log.read_text()
        key = (data_dir / "api-key").read_text().strip()
        other = new_key(f"sqlite:///{data_dir / 'neural-entropy.sqlite3'}", "bob")
        yield UiStack(base, key, other, log)
    finally:
        stop(proc, timeout=30.0)
        shutil.rmtree(data_dir, ignore_errors=True)
