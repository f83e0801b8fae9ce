"""The worker's parent process never touches CUDA; queues follow the devices that exist."""

from __future__ import annotations

import pytest
import torch

from worker import devices


@pytest.fixture
def cuda_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any CUDA query in this process fails the test."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("CUDA was touched in the worker's parent process")

    for name in ("is_available", "device_count", "init", "_lazy_init", "current_device"):
        monkeypatch.setattr(torch.cuda, name, boom)


def test_worker_start_up_path_leaves_cuda_alone(cuda_forbidden, monkeypatch,
                                                bundled_redis_url: str) -> None:
    from worker.__main__ import _preload
    from worker.service_worker import ServiceWorker

    monkeypatch.delenv("WORKER_DEVICE", raising=False)
    from core.settings import get_settings

    get_settings.cache_clear()
    queues = devices.worker_queues()  # asks a subprocess
    assert queues in (["cpu"], ["gpu", "cpu"])
    _preload()
    from redis import Redis

    ServiceWorker(queues, connection=Redis.from_url(bundled_redis_url), name="probe")
    assert not torch.cuda.is_initialized()


def test_queues_follow_the_probe(monkeypatch) -> None:
    monkeypatch.setattr(devices, "cuda_device_count_in_subprocess", lambda timeout=0: 2)
    assert devices.worker_queues(forced_device="") == ["gpu", "cpu"]
    monkeypatch.setattr(devices, "cuda_device_count_in_subprocess", lambda timeout=0: 0)
    assert devices.worker_queues(forced_device="") == ["cpu"]


def test_forced_device_decides_the_queues() -> None:
    assert devices.worker_queues(forced_device="cuda:1") == ["gpu", "cpu"]
    assert devices.worker_queues(forced_device="cpu") == ["cpu"]


def test_probe_subprocess_answers_a_count() -> None:
    assert devices.cuda_device_count_in_subprocess() == torch.cuda.device_count()
