"""API keys: 401 + WWW-Authenticate without a valid key; owners never see each other's data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.keys import hash_key
from core.settings import Settings
from core.tables import ApiKey, utcnow
from tests.app.helpers import assert_problem, create_mixture

ROOT = Path(__file__).resolve().parents[2]


def test_missing_key_gets_401_with_www_authenticate(client: TestClient) -> None:
    r = client.get("/v1/datasets")
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_key_gets_401(client: TestClient, owner_key: tuple[str, str]) -> None:
    for value in ("Bearer ne_wrong", f"Basic {owner_key[1]}", "Bearer", owner_key[1]):
        r = client.get("/v1/jobs", headers={"Authorization": value})
        assert_problem(r, 401)
        assert "www-authenticate" in r.headers


def test_valid_key_is_accepted(client: TestClient, owner_key: tuple[str, str]) -> None:
    r = client.get("/v1/datasets", headers={"Authorization": f"Bearer {owner_key[1]}"})
    assert r.status_code == 200
    assert r.json()["items"] == []


def test_keys_are_stored_hashed(session: Session, owner_key: tuple[str, str]) -> None:
    rows = session.scalars(select(ApiKey)).all()
    assert [r.key_hash for r in rows] == [hash_key(owner_key[1])]
    assert all(owner_key[1] not in (r.key_hash, r.prefix) for r in rows)


def test_revoked_key_gets_401(client: TestClient, session: Session,
                              owner_key: tuple[str, str]) -> None:
    row = session.scalars(select(ApiKey)).one()
    row.revoked_at = utcnow()
    session.commit()
    assert_problem(client.get("/v1/datasets",
                              headers={"Authorization": f"Bearer {owner_key[1]}"}), 401)


def test_public_endpoints_need_no_key(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_other_owner_gets_404_and_empty_lists(api: TestClient,
                                              other_headers: dict[str, str]) -> None:
    ds = create_mixture(api)
    job = api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]}).json()
    assert_problem(api.get(f"/v1/datasets/{ds['id']}", headers=other_headers), 404)
    assert_problem(api.delete(f"/v1/datasets/{ds['id']}", headers=other_headers), 404)
    assert_problem(api.get(f"/v1/jobs/{job['id']}", headers=other_headers), 404)
    assert_problem(api.post(f"/v1/jobs/{job['id']}/cancel", headers=other_headers), 404)
    assert api.get("/v1/datasets", headers=other_headers).json()["total"] == 0
    assert api.get("/v1/jobs", headers=other_headers).json()["total"] == 0
    r = api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]}, headers=other_headers)
    assert_problem(r, 404, "dataset_id")
    # the owner still sees everything
    assert api.get("/v1/datasets").json()["total"] == 1
    assert api.get("/v1/jobs").json()["total"] == 1


def test_cli_create_key_prints_a_working_key(client: TestClient, settings: Settings) -> None:
    env = {**os.environ, "DATABASE_URL": settings.resolved_database_url,
           "DATA_DIR": str(settings.data_dir)}
    out = subprocess.run([sys.executable, "-m", "app.cli", "create-key", "carol"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ne_")
    r = client.get("/v1/datasets", headers={"Authorization": f"Bearer {lines[0]}"})
    assert r.status_code == 200
