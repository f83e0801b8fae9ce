"""The dashboard over HTTP (no browser): sign-in, cookie flags, CSRF, owner isolation, pages,
downloads and the absence of external URLs. The browser tests are in tests/ui/."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.ui.auth import KEY_COOKIE, NONCE_COOKIE
from app.ui.charts import decimate
from core.tables import Job, Measurement
from tests.app.helpers import MIXTURE
from tests.app.test_measurements import SUMMARY, insert_measurement

PAGES = ["/ui/jobs", "/ui/measurements", "/ui/sweeps", "/ui/datasets", "/ui/checkpoints"]


class _Refs(HTMLParser):
    """Every src / href / action value of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href", "action") and v is not None]


def refs_of(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs


def sign_in(client: TestClient, key: str) -> None:
    r = client.post("/ui/sign-in", data={"api_key": key}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs", r.text


def submit_job(client: TestClient, key: str, session: Session, **row: object) -> Job:
    """A real train job through POST /v1/jobs (queued; no worker runs it), then `row` set."""
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/v1/datasets", json=MIXTURE, headers=auth)
    assert r.status_code == 201, r.text
    r = client.post("/v1/jobs", json={"type": "train", "dataset_id": r.json()["id"]},
                    headers=auth)
    assert r.status_code == 202, r.text
    job = session.get(Job, r.json()["id"])
    assert job is not None
    for name, value in row.items():
        setattr(job, name, value)
    session.commit()
    return job


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_sign_in_page_without_session(client: TestClient, owner_key: tuple[str, str],
                                      session: Session) -> None:
    insert_measurement(session, owner_key[0])
    r = client.get("/ui/")
    assert r.status_code == 200 and 'name="api_key"' in r.text
    assert "alice" not in r.text and "ms_" not in r.text
    for path in PAGES:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/", path
    assert client.get("/ui/api/jobs").status_code == 401


def test_sign_in_sets_strict_httponly_cookies(client: TestClient,
                                              owner_key: tuple[str, str]) -> None:
    r = client.post("/ui/sign-in", data={"api_key": owner_key[1]}, follow_redirects=False)
    assert r.status_code == 303
    cookies = r.headers.get_list("set-cookie")
    assert {c.split("=", 1)[0] for c in cookies} == {KEY_COOKIE, NONCE_COOKIE}
    for c in cookies:
        flags = {part.strip().lower() for part in c.split(";")[1:]}
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags, c
    assert owner_key[1] not in r.headers["location"]
    page = client.get("/ui/jobs")
    assert page.status_code == 200 and "alice" in page.text
    assert owner_key[1] not in page.text  # the key is never echoed into a page
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_wrong_key_is_refused(client: TestClient, owner_key: tuple[str, str]) -> None:
    r = client.post("/ui/sign-in", data={"api_key": "ne_wrong"}, follow_redirects=False)
    assert r.status_code == 401 and "not valid" in r.text and "set-cookie" not in r.headers
    r = client.post("/ui/sign-in", data={"api_key": ""}, follow_redirects=False)
    assert r.status_code == 401
    r = client.post("/ui/sign-in", data={"api_key": "x" * 500}, follow_redirects=False)
    assert r.status_code == 422


def test_cancel_needs_the_csrf_token(client: TestClient, owner_key: tuple[str, str],
                                     session: Session) -> None:
    job = submit_job(client, owner_key[1], session, status="running",
                     progress={"phase": "training", "fraction": 0.5})
    sign_in(client, owner_key[1])
    token = csrf_of(client.get("/ui/jobs").text)
    url = f"/ui/jobs/{job.id}/cancel"
    assert client.post(url).status_code == 403
    assert client.post(url, data={"csrf_token": "0" * 64}).status_code == 403
    assert client.post(url, headers={"X-CSRF-Token": token[:-1] + "x"}).status_code == 403
    cross = client.post(url, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
    assert cross.status_code == 403
    session.refresh(job)
    assert job.cancel_requested is False
    r = client.post(url, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    session.refresh(job)
    assert job.cancel_requested is True
    # the form post (no script) answers with a redirect to the list
    job.cancel_requested = False
    session.commit()
    r = client.post(url, data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"


def test_sign_out_clears_the_session(client: TestClient, owner_key: tuple[str, str]) -> None:
    sign_in(client, owner_key[1])
    token = csrf_of(client.get("/ui/jobs").text)
    assert client.post("/ui/sign-out", data={}, follow_redirects=False).status_code == 403
    r = client.post("/ui/sign-out", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_measurement_page_and_downloads(client: TestClient, owner_key: tuple[str, str],
                                        session: Session) -> None:
    mid, s = insert_measurement(session, owner_key[0])
    sign_in(client, owner_key[1])
    r = client.get(f"/ui/measurements/{mid}")
    assert r.status_code == 200
    html = r.text
    assert "1.05 ± 0.006" in html and "1.148 ± 0.004" in html  # S_NN and S_tot with errors
    assert 'id="chart-rate"' in html and 'id="chart-cumulative"' in html
    assert html.count('class="band ') >= 3  # rate, dS_tot and cumulative stderr bands
    data = [json.loads(m) for m in re.findall(
        r'<script type="application/json" class="chart-data" data-for="[^"]+">(.*?)</script>',
        html, re.S)]
    rate = data[0]["series"][0]
    assert rate["x"] is None  # the series share the chart's x list
    np.testing.assert_allclose(data[0]["x"], s, rtol=1e-6)
    np.testing.assert_allclose(rate["y"], np.exp(-s) * 2.0, rtol=1e-6)
    assert [d["name"] for d in data[0]["series"]] == ["dS_NN/ds", "dS_tot/ds"]
    assert "entropy_matching" in html and "2.13.0" in html  # the reproducibility record
    csv_text = client.get(f"/ui/measurements/{mid}/curve.csv").text
    assert csv_text.splitlines()[0].startswith("s,rate,rate_stderr")
    doc = client.get(f"/ui/measurements/{mid}/measurement.json").json()
    assert doc["measurement"]["summary"] == SUMMARY and len(doc["curve"]["points"]) == 64
    png = client.get(f"/ui/measurements/{mid}/plot.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    for link in (f"/ui/measurements/{mid}/curve.csv", f"/ui/measurements/{mid}/plot.png"):
        assert link in refs_of(html)


def test_compare_page(client: TestClient, owner_key: tuple[str, str], session: Session) -> None:
    a, _ = insert_measurement(session, owner_key[0])
    b, _ = insert_measurement(session, owner_key[0], with_total=False)
    sign_in(client, owner_key[1])
    listing = client.get("/ui/measurements").text
    assert a in listing and b in listing and 'name="ids"' in listing
    r = client.get("/ui/compare", params=[("ids", a), ("ids", b)])
    assert r.status_code == 200 and "Comparison of 2 measurements" in r.text
    assert 'id="chart-compare-rate"' in r.text
    bad = client.get("/ui/compare", params={"ids": ""})
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]


def test_second_owner_sees_nothing_of_the_first(client: TestClient, owner_key: tuple[str, str],
                                                other_key: tuple[str, str],
                                                session: Session) -> None:
    mid, _ = insert_measurement(session, owner_key[0])
    job = submit_job(client, owner_key[1], session)
    sign_in(client, other_key[1])
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200 and mid not in r.text and job.id not in r.text, path
    assert client.get("/ui/api/jobs").json() == {"jobs": [], "total": 0}
    for path in (f"/ui/measurements/{mid}", f"/ui/jobs/{job.id}",
                 f"/ui/measurements/{mid}/curve.csv", f"/ui/measurements/{mid}/plot.png"):
        assert client.get(path).status_code == 404, path
    assert client.get("/ui/compare", params={"ids": mid}).status_code == 404
    token = csrf_of(client.get("/ui/jobs").text)
    assert client.post(f"/ui/jobs/{job.id}/cancel",
                       headers={"X-CSRF-Token": token}).status_code == 404


@pytest.mark.parametrize("path", ["/ui/", *PAGES])
def test_pages_load_nothing_from_elsewhere(client: TestClient, owner_key: tuple[str, str],
                                           session: Session, path: str) -> None:
    mid, _ = insert_measurement(session, owner_key[0])
    if path != "/ui/":
        sign_in(client, owner_key[1])
    for page in (path, f"/ui/measurements/{mid}") if path != "/ui/" else (path,):
        html = client.get(page).text
        refs = refs_of(html)
        assert refs, page
        assert not [r for r in refs if re.match(r"^\s*(https?:)?//", r, re.I)], page
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in html


def test_job_list_filters_and_json(client: TestClient, owner_key: tuple[str, str],
                                   session: Session) -> None:
    for status in ("running", "succeeded", "failed"):
        submit_job(client, owner_key[1], session, status=status, device="cpu",
                   progress={"phase": "training", "fraction": 0.25, "eta_seconds": 75.0})
    sign_in(client, owner_key[1])
    doc = client.get("/ui/api/jobs").json()
    assert doc["total"] == 3
    running = next(j for j in doc["jobs"] if j["status"] == "running")
    assert running["percent"] == 25 and running["eta"] == "1 min 15 s" and running["cancelable"]
    assert running["device"] == "cpu"
    done = next(j for j in doc["jobs"] if j["status"] == "succeeded")
    assert done["percent"] == 100 and not done["cancelable"] and done["eta"] == ""
    assert client.get("/ui/api/jobs", params={"type": "train"}).json()["total"] == 3
    assert client.get("/ui/api/jobs", params={"type": "sample"}).json()["total"] == 0
    assert client.get("/ui/api/jobs", params={"status": "failed"}).json()["total"] == 1
    html = client.get("/ui/jobs", params={"status": "running"}).text
    assert html.count('data-job="') == 1 and "1 min 15 s" in html


def test_train_job_page_shows_the_verdict_and_trajectory(client: TestClient,
                                                         owner_key: tuple[str, str],
                                                         session: Session) -> None:
    conv = {"verdict": "not_converged", "tolerance": 0.02, "relative_drift": 0.031,
            "relative_drift_stderr": 0.004, "level_nats": 1.2,
            "extrapolated": {"epoch": 16, "nats": 1.237}, "window": [2, 8],
            "reason": "S_NN still rises", "stopped_at_epoch": None,
            "trajectory": [{"epoch": e, "nats": 1.0 + 0.05 * i, "stderr": 0.003}
                           for i, e in enumerate((1, 2, 4, 8))]}
    job = submit_job(client, owner_key[1], session, status="running", convergence=conv)
    sign_in(client, owner_key[1])
    r = client.get(f"/ui/jobs/{job.id}")
    assert r.status_code == 200, r.text
    assert "not converged" in r.text and "+3.10 % ± 0.40 %" in r.text
    data = [json.loads(m) for m in re.findall(
        r'<script type="application/json" class="chart-data" data-for="[^"]+">(.*?)</script>',
        r.text, re.S)]
    assert data[0]["series"][0]["x"] == [1, 2, 4, 8]
    assert data[0]["series"][0]["y"] == [1.0, 1.05, 1.1, 1.15]
    assert data[0]["series"][1]["name"] == "trend against log(epoch)"


def test_sweep_page_plots_s_nn_against_n_with_the_fit(client: TestClient,
                                                      owner_key: tuple[str, str],
                                                      session: Session) -> None:
    auth = {"Authorization": f"Bearer {owner_key[1]}"}
    dataset_id = client.post("/v1/datasets", json=MIXTURE, headers=auth).json()["id"]
    r = client.post("/v1/sweeps", headers=auth, json={
        "base": {"dataset_id": dataset_id, "training": {"epochs": 2}},
        "grid": {"n_train": [50, 100, 200]}})
    assert r.status_code == 202, r.text
    sweep = r.json()
    for k, point in enumerate(sweep["jobs"]):
        mid, _ = insert_measurement(session, owner_key[0])
        row = session.get(Job, point["id"])
        assert row is not None
        row.status, row.measurement_id = "succeeded", mid
        measured = session.get(Measurement, mid)
        assert measured is not None
        ne = dict(SUMMARY["neural_entropy"])  # type: ignore[call-overload]
        ne["nats"] = 1.0 + 0.1 * k
        measured.summary = {**SUMMARY, "neural_entropy": ne}
    session.commit()
    sign_in(client, owner_key[1])
    assert sweep["id"] in client.get("/ui/sweeps").text
    r = client.get(f"/ui/sweeps/{sweep['id']}")
    assert r.status_code == 200, r.text
    data = json.loads(re.search(r'class="chart-data" data-for="chart-sweep">(.*?)</script>',
                                r.text, re.S).group(1))  # type: ignore[union-attr]
    names = [s["name"] for s in data["series"]]
    assert names[0].startswith("S_NN ") and names[1].startswith("fit ")
    assert data["series"][0]["x"] == [50, 100, 200]
    assert data["series"][0]["y"] == pytest.approx([1.0, 1.1, 1.2])
    assert "Fits S_NN = a + b ln N" in r.text and r.text.count("(final)") == 3


def test_data_set_lists_with_image_previews(client: TestClient, owner_key: tuple[str, str],
                                            other_key: tuple[str, str]) -> None:
    auth = {"Authorization": f"Bearer {owner_key[1]}"}
    digits = client.post("/v1/datasets", json={"kind": "digits"}, headers=auth).json()
    mixture = client.post("/v1/datasets", json=MIXTURE, headers=auth).json()
    sign_in(client, owner_key[1])
    html = client.get("/ui/datasets").text
    assert digits["id"] in html and mixture["id"] in html
    assert f"/ui/datasets/{digits['id']}/preview.png" in refs_of(html)
    assert f"/ui/datasets/{mixture['id']}/preview.png" not in html
    png = client.get(f"/ui/datasets/{digits['id']}/preview.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/ui/datasets/{mixture['id']}/preview.png").status_code == 404
    assert "No checkpoints yet" in client.get("/ui/checkpoints").text
    sign_in(client, other_key[1])
    assert client.get(f"/ui/datasets/{digits['id']}/preview.png").status_code == 404


def test_decimate_keeps_what_shows_at_one_unit_per_column() -> None:
    rng = np.random.default_rng(0)
    xs = np.linspace(0.0, 99.99, 4096)
    ys = np.sin(xs / 7.0) + rng.normal(0.0, 0.1, xs.size)
    points = np.column_stack((xs, ys))
    kept = decimate(points)
    assert len(kept) <= 4 * 100
    assert (kept[0] == points[0]).all() and (kept[-1] == points[-1]).all()
    assert (np.diff(kept[:, 0]) > 0).all()  # a subset, still in order
    assert {tuple(p) for p in kept} <= {tuple(p) for p in points}
    for column in range(100):
        inside = points[points[:, 0].astype(int) == column]
        shown = kept[kept[:, 0].astype(int) == column]
        assert shown[:, 1].min() == inside[:, 1].min()
        assert shown[:, 1].max() == inside[:, 1].max()
        assert (shown[0] == inside[0]).all() and (shown[-1] == inside[-1]).all()
