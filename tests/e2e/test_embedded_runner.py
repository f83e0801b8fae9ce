"""`make run`'s runner: key file before the API listens, bundled Redis on a socket only, and a
stop signal leaves no process behind."""

from __future__ import annotations

import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.e2e.procs import alive, clean_env, descendants, free_port, spawn, stop, wait_until

START_TIMEOUT = 90.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ne-run-"))  # short: the Redis socket lives here
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _start(data_dir: Path, port: int, log: Path):
    proc = spawn(["-m", "runner"], clean_env(DATA_DIR=str(data_dir), PORT=str(port)), log)
    key_file = data_dir / "api-key"
    seen_before_listen = []

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False
        seen_before_listen.append(key_file.is_file())
        return ok

    assert wait_until(healthy, START_TIMEOUT, 0.05), log.read_text()
    assert seen_before_listen[0], "the API answered before DATA_DIR/api-key was written"
    return proc


def _stop_and_check_tree(proc, sig: int) -> None:
    tree = descendants(proc.pid)
    assert len(tree) >= 3  # redis-server, worker, uvicorn
    proc.send_signal(sig)
    try:
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    assert wait_until(lambda: not any(alive(p) for p in tree), 10.0), \
        f"left behind: {[p for p in tree if alive(p)]}"


def test_runner_serves_with_a_key_file_and_stops_everything(data_dir: Path,
                                                             tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "run.log"
    proc = _start(data_dir, port, log)
    key_file = data_dir / "api-key"
    try:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        text = key_file.read_text()
        assert re.fullmatch(r"\S+\n", text), "the key file holds the key alone, one line"
        key = text.strip()
        assert key in log.read_text()  # printed on first start
        r = httpx.get(f"http://127.0.0.1:{port}/v1/jobs",
                      headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        redis = Redis(unix_socket_path=str(data_dir / "redis.sock"))
        assert redis.config_get("port")["port"] == "0"  # no TCP listener
        assert redis.config_get("save")["save"] == ""  # nothing persisted
        redis.close()
    except BaseException:
        stop(proc)
        raise
    _stop_and_check_tree(proc, signal.SIGTERM)
    assert not (data_dir / "redis.sock").exists()

    # a second start keeps the key (and its owner); Ctrl+C (SIGINT) stops everything too
    second = _start(data_dir, port, tmp_path / "second.log")
    try:
        assert key_file.read_text() == text
        r = httpx.get(f"http://127.0.0.1:{port}/v1/jobs",
                      headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    except BaseException:
        stop(second)
        raise
    _stop_and_check_tree(second, signal.SIGINT)
