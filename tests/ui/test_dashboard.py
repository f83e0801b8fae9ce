"""The dashboard in a real browser (headless system Chromium via Playwright) against a real
embedded stack (runner: SQLite, bundled Redis, a worker, the API): sign in, watch a real train
job progress to `succeeded` without reloading, read a curve value by hovering, compare two
measurements, cancel a job (CSRF-protected), and a second owner sees nothing of the first's.

Screenshots go to UI_SCREENSHOT_DIR (or a temporary directory): `jobs-running.png` and
`measurement.png` are the ones docs/ui/ shows.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ui.conftest import UiStack

MIXTURE = {"kind": "gaussian_mixture", "n_components": 3, "dim": 2, "n_samples": 1024, "seed": 0}
NETWORK = {"arch": "mlp", "width": 32, "hidden_widths": [32, 32]}
# seconds of work on one idle CPU core; the milestone gives the job a second measurement
TRAIN = {"type": "train", "network": NETWORK,
         "training": {"epochs": 4, "batch_size": 64, "lr": 1e-3, "milestones": [2]},
         "measurement": {"n_times": 32, "n_samples": 1024}}
LONG = {**TRAIN, "training": {"epochs": 5000, "batch_size": 64, "milestones": []}}
JOB_TIMEOUT_MS = 600_000  # generous: CI machines may be shared
NUMBER = r"(-?[0-9.]+(?:e[-+]?[0-9]+)?)"


PAGE_TIMEOUT_MS = 120_000  # Playwright waits (default 30 s); generous for shared CI machines


def new_context(browser: Any, **kwargs: Any) -> Any:
    context = browser.new_context(**kwargs)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
    return context


def api(stack: UiStack, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=30.0,
                        headers={"Authorization": f"Bearer {key or stack.key}"})


def sign_in(page: Any, stack: UiStack, key: str) -> None:
    page.goto(f"{stack.base_url}/ui/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.base_url}/ui/jobs")


def external_refs(page: Any) -> list[str]:
    """src / href / action attributes that point off the app."""
    refs = page.eval_on_selector_all(
        "[src], [href], [action]",
        "els => els.map(e => e.getAttribute('src') || e.getAttribute('href') "
        "|| e.getAttribute('action'))")
    return [r for r in refs if re.match(r"^\s*(https?:)?//", r or "", re.I)]


def readout(page: Any, chart_id: str) -> str:
    return str(page.locator(f'[data-readout="{chart_id}"]').inner_text())


def hover_plot(page: Any, chart_id: str, fraction: float) -> None:
    """Move the mouse to `fraction` of the plot area's width, half-way up (viewBox 640 x 300,
    plot from x = 64 to 624)."""
    box = page.locator(f"#{chart_id}").bounding_box()
    scale = box["width"] / 640.0
    x = box["x"] + (64 + fraction * (624 - 64)) * scale
    page.mouse.move(x, box["y"] + box["height"] / 2)


def test_sign_in_watch_a_job_and_read_its_curve(browser: Any, ui_stack: UiStack,
                                                screenshot_dir: Path) -> None:
    stack = ui_stack
    context = new_context(browser, viewport={"width": 1366, "height": 768})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()

    # signed out: the sign-in page, nothing of the owner's
    page.goto(f"{stack.base_url}/ui/")
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.get_by_role("button", name="Sign in").click()  # nothing typed: the form is not sent
    assert page.url == f"{stack.base_url}/ui/" and context.cookies() == []
    page.get_by_label("API key").fill("ne_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.get_by_role("alert").inner_text()
    assert context.cookies() == []
    sign_in(page, stack, stack.key)
    cookies = {c["name"]: c for c in context.cookies()}
    assert set(cookies) == {"ne_ui_key", "ne_ui_nonce"}
    assert all(c["httpOnly"] and c["sameSite"] == "Strict" and c["path"] == "/ui"
               for c in cookies.values())
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the key
    assert stack.key not in page.url

    # a job submitted through the API appears and progresses without a reload
    page.evaluate("window.__notReloaded = true")
    with api(stack) as c:
        dataset_id = c.post("/v1/datasets", json=MIXTURE).json()["id"]
        r = c.post("/v1/jobs", json={**TRAIN, "dataset_id": dataset_id})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    row = page.locator(f'tr[data-job="{job_id}"]')
    row.wait_for(timeout=15_000)
    seen: set[str] = set()
    shot = False
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        status = row.locator('[data-field="status"]').inner_text()
        seen.add(status)
        if status == "running" and not shot:  # the first sight, then one with progress shown
            value = row.locator("progress").get_attribute("value")
            page.screenshot(path=str(screenshot_dir / "jobs-running.png"))
            shot = value is not None and float(value) > 0
        if status in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.25)
    assert status == "succeeded", (status, stack.log_text())
    assert "running" in seen, seen  # watched it run, not just finish
    assert page.evaluate("window.__notReloaded") is True
    assert row.locator("progress").get_attribute("value") == "100"
    assert row.locator('[data-field="device"]').inner_text() == "cpu"

    # its measurement: summary with errors, and a curve value read by hovering
    with api(stack) as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
        m = c.get(f"/v1/measurements/{job['measurement_id']}").json()
        curve = c.get(f"/v1/measurements/{job['measurement_id']}/curve").json()["points"]
    row.get_by_role("link", name="measurement").click()
    page.wait_for_url(f"**/ui/measurements/{m['id']}")
    ne = m["neural_entropy"]
    assert page.locator("#s-nn").inner_text().startswith(f"{ne['nats']:.5g} ± {ne['stderr']:.2g}")
    assert page.locator("#s-tot").is_visible()  # a mixture: S_tot is known
    assert page.get_by_role("heading", name="Reproducibility record").is_visible()
    hover_plot(page, "chart-rate", 0.5)
    text = readout(page, "chart-rate")
    s_val = float(re.search(rf"s = {NUMBER}", text).group(1))  # type: ignore[union-attr]
    rate = re.search(rf"dS_NN/ds = {NUMBER} ± {NUMBER}", text)
    assert rate is not None, text
    point = min(curve, key=lambda p: abs(p["s"] - s_val))
    assert point["s"] == pytest.approx(s_val, rel=1e-5)
    assert point["rate"] == pytest.approx(float(rate.group(1)), rel=1e-5, abs=1e-12)
    assert point["rate_stderr"] == pytest.approx(float(rate.group(2)), rel=1e-5, abs=1e-12)
    assert "dS_tot/ds = " in text
    page.screenshot(path=str(screenshot_dir / "measurement.png"), full_page=True)
    # the keyboard reaches the same values: focus the chart, End = the last point
    page.locator("#chart-cumulative").focus()
    page.keyboard.press("End")
    last = readout(page, "chart-cumulative")
    value = float(re.search(rf"S_NN\(s\) = {NUMBER}", last).group(1))  # type: ignore[union-attr]
    assert value == pytest.approx(curve[-1]["cumulative"], rel=1e-5)
    for link in ("curve (CSV)", "plot (PNG)"):
        href = page.get_by_role("link", name=link).get_attribute("href")
        assert page.request.get(f"{stack.base_url}{href}").status == 200

    # the train job's page: S_NN over the milestones and the verdict
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    assert page.locator("#verdict").inner_text().strip()
    assert page.locator("#chart-convergence").is_visible()
    assert page.locator("table").filter(has_text="Epoch").locator("tbody tr").count() == 1

    # compare the milestone's measurement with the final one
    page.goto(f"{stack.base_url}/ui/measurements")
    ids = [job["milestones"][0]["measurement_id"], job["measurement_id"]]
    for mid in ids:
        page.locator(f"#pick-{mid}").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/ui/compare?**")
    assert page.get_by_role("heading", name="Comparison of 2 measurements").is_visible()
    hover_plot(page, "chart-compare-cumulative", 0.7)
    assert readout(page, "chart-compare-cumulative").count(" = ") == 3  # s and both curves

    # cancel a running job from the list (the token travels in a header)
    with api(stack) as c:
        long_id = c.post("/v1/jobs", json={**LONG, "dataset_id": dataset_id}).json()["id"]
    page.goto(f"{stack.base_url}/ui/jobs")
    long_row = page.locator(f'tr[data-job="{long_id}"]')
    long_row.get_by_role("button", name=f"Cancel job {long_id}").click()
    page.wait_for_function(
        f"""() => {{ const s = document.querySelector('tr[data-job="{long_id}"] [data-field=status]');
                   return s && s.textContent === 'canceled'; }}""", timeout=60_000)

    for url in set(requests):
        assert url.startswith(stack.base_url), url
    assert external_refs(page) == []
    context.close()


def test_csrf_refusal_in_the_browser(browser: Any, ui_stack: UiStack) -> None:
    """A cancel without the page's token is refused, even with the session cookie."""
    stack = ui_stack
    with api(stack) as c:
        dataset_id = c.post("/v1/datasets", json=MIXTURE).json()["id"]
        job_id = c.post("/v1/jobs", json={**LONG, "dataset_id": dataset_id}).json()["id"]
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, stack, stack.key)
    status = page.evaluate(
        f"fetch('/ui/jobs/{job_id}/cancel', {{method: 'POST'}}).then(r => r.status)")
    assert status == 403
    status = page.evaluate(
        f"fetch('/ui/jobs/{job_id}/cancel', {{method: 'POST', headers: {{'X-CSRF-Token': "
        "'0'.repeat(64)}}).then(r => r.status)")
    assert status == 403
    with api(stack) as c:
        assert c.get(f"/v1/jobs/{job_id}").json()["cancel_requested"] is False
        c.post(f"/v1/jobs/{job_id}/cancel")
    context.close()


def test_second_owner_sees_nothing_of_the_first(browser: Any, ui_stack: UiStack) -> None:
    stack = ui_stack
    with api(stack) as c:
        dataset_id = c.post("/v1/datasets", json=MIXTURE).json()["id"]
        jobs = c.get("/v1/jobs").json()["items"]
    theirs = {dataset_id, *(j["id"] for j in jobs),
              *(j["measurement_id"] for j in jobs if j["measurement_id"])}
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, stack, stack.other_key)
    for path in ("jobs", "measurements", "sweeps", "datasets", "checkpoints"):
        page.goto(f"{stack.base_url}/ui/{path}")
        html = page.content()
        assert not [i for i in theirs if i in html], path
    job = next(j for j in jobs if j["measurement_id"])
    response = page.goto(f"{stack.base_url}/ui/measurements/{job['measurement_id']}")
    assert response is not None and response.status == 404
    response = page.goto(f"{stack.base_url}/ui/jobs/{job['id']}")
    assert response is not None and response.status == 404
    # sign out: back to the sign-in page, the cookies gone
    page.goto(f"{stack.base_url}/ui/jobs")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{stack.base_url}/ui/")
    assert context.cookies() == []
    context.close()
