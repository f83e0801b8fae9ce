"""docker-compose.yml and the Dockerfile, checked by reading (no Docker engine runs here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "redis", "minio", "minio-init", "migrate", "api", "worker"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """volume name -> container path."""
    out = {}
    for v in service.get("volumes", []):
        name, path = v.split(":")[:2]
        out[name] = path
    return out


def test_all_services_are_defined(compose: dict[str, Any]) -> None:
    assert SERVICES <= set(compose["services"])


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in ("postgres", "redis", "minio", "api", "worker"):
        check = compose["services"][name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"


def test_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count", 0) >= 1
               for d in devices)


def test_blobs_live_in_minio_and_workers_share_no_disk(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert not set(_mounts(api)) & set(_mounts(worker)), "api and worker share a volume"
    assert not _mounts(worker), "the worker needs no volume"
    for svc in (api, worker):
        env = svc["environment"]
        assert env["ARTIFACT_URL"].startswith("s3://") and "ARTIFACT_DIR" not in env
        assert "minio:9000" in env["AWS_ENDPOINT_URL"]
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in compose["services"]["minio"]
    init = compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(init["command"]) and init["restart"] == "no"
    # the bucket the init service makes is the one ARTIFACT_URL names
    bucket = api["environment"]["ARTIFACT_URL"][len("s3://"):].split("/")[0]
    assert bucket == "${ARTIFACT_BUCKET:-neural-entropy}"
    assert init["environment"]["ARTIFACT_BUCKET"] == bucket


def test_services_point_at_postgres_and_redis(compose: dict[str, Any]) -> None:
    for name in ("migrate", "api", "worker"):
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")


def test_start_order_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        deps = compose["services"][name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_redis_keeps_nothing_on_disk(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"


def test_commands_name_modules_that_exist(compose: dict[str, Any]) -> None:
    for name in ("migrate", "api", "worker"):
        command = compose["services"][name]["command"]
        if command[0] == "uvicorn":
            module = command[1].split(":")[0]
        else:
            assert command[:2] == ["python", "-m"]
            module = command[2]
        assert importlib.util.find_spec(module) is not None, module
    health = compose["services"]["worker"]["healthcheck"]["test"]
    assert importlib.util.find_spec(health[health.index("-m") + 1]) is not None


def test_dockerfile_pins_torch_before_installing_the_package(dockerfile: str) -> None:
    torch_at = dockerfile.index('"torch==${TORCH_VERSION}"')
    assert re.search(r"ARG TORCH_VERSION=2\.13\.0", dockerfile)
    assert torch_at < dockerfile.index("pip install -e .")


def test_dockerfile_copies_what_exists(dockerfile: str) -> None:
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_dockerfile_runs_unprivileged_and_serves_the_api(dockerfile: str) -> None:
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M)
    assert "app.main:app" in dockerfile and "HEALTHCHECK" in dockerfile
