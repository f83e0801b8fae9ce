"""schemathesis against the app's own /openapi.json: every phase (examples, coverage, fuzzing,
stateful), every check except `positive_data_acceptance`, a few examples per operation and a
fixed seed. The server must answer with no server error and nothing outside its schema
(status codes, content types, headers, bodies), on SQLite and PostgreSQL.

`positive_data_acceptance` is left out on purpose: it expects a 2xx for any schema-valid
request, but a schema cannot say that an uploaded file must be a real .npy or that an id must
exist (those are refused with 4xx, as they should be).

Select it with `-m schemathesis`; about half a minute per database.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.main import create_app
from core.settings import Settings

pytestmark = [pytest.mark.schemathesis, pytest.mark.timeout(300)]

CHECKS_EXCLUDED = "positive_data_acceptance"
PHASES = "examples,coverage,fuzzing,stateful"
MAX_EXAMPLES = 5
SEED = 20261130


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve(settings: Settings) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(found).exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return found


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        settings: Settings, owner_key: tuple[str, str], tmp_path: Path) -> None:
    with _serve(settings) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        # build the schema once before schemathesis loads it (its loader waits 10 s at most)
        assert httpx.get(f"{base}/openapi.json", timeout=120).status_code == 200
        result = subprocess.run(
            [_schemathesis(), "run", f"{base}/openapi.json",
             "-H", f"Authorization: Bearer {owner_key[1]}",
             "--phases", PHASES, "--checks", "all", "--exclude-checks", CHECKS_EXCLUDED,
             "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
             "--request-timeout", "30", "--warnings", "off", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=280)
    tail = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
