"""Real HTTP: uvicorn serving the app in a thread, httpx talking to it over a TCP socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn

from app.main import create_app
from core.settings import Settings
from tests.app.helpers import MIXTURE, npy_bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    capped = settings.model_copy(update={"max_upload_bytes": 64 * 1024})
    port = _free_port()
    config = uvicorn.Config(create_app(capped), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_over_a_real_socket(server: str, owner_key: tuple[str, str]) -> None:
    auth = {"Authorization": f"Bearer {owner_key[1]}"}
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        assert http.get("/readyz").status_code == 200
        r = http.get("/v1/datasets")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        x = np.random.default_rng(0).normal(size=(40, 2))
        up = http.post("/v1/datasets", headers=auth,
                       files={"file": ("x.npy", npy_bytes(x), "application/octet-stream")})
        assert up.status_code == 201, up.text
        mix = http.post("/v1/datasets", headers=auth, json=MIXTURE)
        assert mix.status_code == 201
        job = http.post("/v1/jobs", headers=auth,
                        json={"type": "train", "dataset_id": mix.json()["id"],
                              "training": {"epochs": 2}})
        assert job.status_code == 202 and job.headers["location"].startswith("/v1/jobs/")
        got = http.get(job.headers["location"], headers=auth)
        assert got.json()["status"] == "queued"
        big = http.post("/v1/datasets", headers=auth,
                        files={"file": ("big.npy", npy_bytes(np.zeros((20_000,))))})
        assert big.status_code == 413
        assert big.headers["content-type"].startswith("application/problem+json")
        assert "neural_entropy_http_request_duration_seconds" in http.get("/metrics").text
