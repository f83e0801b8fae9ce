"""A running service for end-to-end tests: the API (uvicorn) and a worker (`python -m worker`)
as real subprocesses on a migrated database and a real Redis, talked to over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from core.db import engine_for
from core.keys import create_api_key
from tests.e2e.procs import clean_env, free_port, http_ok, spawn, stop, wait_until

FINAL = {"succeeded", "failed", "canceled"}
START_TIMEOUT = 90.0


@dataclass
class Stack:
    base_url: str
    key: str
    logs: list[Path]
    worker: Any
    api: Any
    env: dict[str, str]
    database_url: str

    def restart_worker(self) -> None:
        """Stop the worker (SIGTERM: a cold stop that kills a running job) and start another."""
        stop(self.worker)
        self.worker = spawn(["-m", "worker", "--queues", "cpu"], self.env, self.logs[0])

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0,
                            headers={"Authorization": f"Bearer {self.key}"})

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-6000:]}" for p in self.logs if p.exists())


def migrate(url: str) -> None:
    from alembic import command

    from core.migrations import alembic_config

    command.upgrade(alembic_config(url), "head")


def new_key(url: str, name: str = "e2e") -> str:
    with Session(engine_for(url)) as session:
        _, key = create_api_key(session, name)
        session.commit()
    return key


@contextmanager
def running_stack(database_url: str, redis_url: str, data_dir: Path, log_dir: Path,
                  **extra_env: str) -> Iterator[Stack]:
    """Migrate, make a key, start worker + API; stop both (and their process groups) after."""
    migrate(database_url)
    key = new_key(database_url)
    port = free_port()
    env = clean_env(DATA_DIR=str(data_dir), DATABASE_URL=database_url, REDIS_URL=redis_url,
                    PROGRESS_INTERVAL_SECONDS="0.25", **{"WORKER_TORCH_THREADS": "1", **extra_env})
    logs = [log_dir / "worker.log", log_dir / "api.log"]
    worker = spawn(["-m", "worker", "--queues", "cpu"], env, logs[0])
    api = spawn(["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
                env, logs[1])
    stack = Stack(f"http://127.0.0.1:{port}", key, logs, worker, api, env, database_url)
    try:
        assert wait_until(lambda: http_ok(f"{stack.base_url}/readyz") or api.poll() is not None,
                          START_TIMEOUT), stack.log_text()
        assert api.poll() is None, stack.log_text()
        yield stack
    finally:
        stop(stack.api)
        stop(stack.worker)
        engine_for(database_url).dispose()


def wait_for_job(client: httpx.Client, job_id: str, timeout: float,
                 stack: Stack | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/v1/jobs/{job_id}").json()
        if doc["status"] in FINAL:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {doc['status']} after {timeout} s: {doc}\n"
                                 + (stack.log_text() if stack else ""))
        if stack is not None and stack.worker.poll() is not None:
            raise AssertionError("the worker died\n" + stack.log_text())
        time.sleep(0.2)
