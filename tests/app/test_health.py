"""/healthz, /readyz, /metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from tests.app.helpers import create_mixture


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_readyz_checks_database_and_redis(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "redis": "ok", "artifacts": "ok"}


def test_readyz_is_503_when_redis_is_unreachable(settings: Settings, tmp_path) -> None:
    bad = settings.model_copy(update={"redis_url": f"unix://{tmp_path}/nothing.sock"})
    with TestClient(create_app(bad)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["redis"].startswith("error")


def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    bad = settings.model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    with TestClient(create_app(bad)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("error")


def test_metrics_report_jobs_queue_depth_and_latency(api: TestClient) -> None:
    ds = create_mixture(api)
    assert api.post("/v1/jobs", json={"type": "train", "dataset_id": ds["id"]}).status_code == 202
    text = api.get("/metrics").text
    assert 'neural_entropy_jobs{status="queued"} 1.0' in text
    assert 'neural_entropy_jobs{status="running"} 0.0' in text
    assert 'neural_entropy_queue_depth{queue="cpu"} 1.0' in text
    assert ('neural_entropy_http_request_duration_seconds_count{method="POST",'
            'route="/v1/datasets",status="201"} 1.0') in text
    assert 'route="/v1/jobs"' in text


def api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute with its full path (FastAPI may keep included routers unflattened)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):
            context = getattr(route, "include_context", None)
            inner = prefix + (getattr(context, "prefix", "") or "")
            yield from api_routes(route.original_router.routes, inner)
        elif hasattr(route, "routes"):
            yield from api_routes(route.routes, prefix + getattr(route, "path", ""))


def test_openapi_documents_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    routes = list(api_routes(client.app.routes))  # type: ignore[attr-defined]
    paths = {path for path, _ in routes}
    for expected in ("/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/jobs", "/v1/jobs/{job_id}",
                     "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/samples.npy",
                     "/v1/jobs/{job_id}/samples.png", "/v1/measurements/{measurement_id}",
                     "/v1/measurements/{measurement_id}/curve",
                     "/v1/measurements/{measurement_id}/plot.png", "/healthz", "/readyz",
                     "/metrics"):
        assert expected in paths, expected
    for path, route in routes:
        if not route.include_in_schema:
            continue
        assert path in doc["paths"], path
        for method in route.methods - {"HEAD"}:
            op = doc["paths"][path][method.lower()]
            assert op.get("summary"), (method, path)
            assert op.get("responses"), (method, path)
            if path.startswith("/v1"):
                assert op.get("security"), f"{method} {path} documents no key"
    post = doc["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(post)
    schemas = doc["components"]["schemas"]
    for name in ("GaussianMixtureCreate", "DigitsCreate", "TrainingSpec", "MeasurementSpec",
                 "JobPublic", "MeasurementPublic"):
        assert name in schemas, name
    assert schemas["TrainingSpec"]["properties"]["epochs"]["default"] == 50


def _resolve(doc: dict, schema: dict) -> dict:
    """Follow a `$ref` (or a single-entry anyOf with null) to the component it names."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            schema = option
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_openapi_types_the_result_documents_field_by_field(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    ok = doc["paths"]["/v1/measurements/{measurement_id}"]["get"]["responses"]["200"]
    measurement = _resolve(doc, ok["content"]["application/json"]["schema"])
    props = measurement["properties"]
    neural = _resolve(doc, props["neural_entropy"])["properties"]
    assert {"nats", "bits", "bits_per_dim", "stderr"} <= set(neural)
    assert all(neural[k]["type"] == "number" for k in ("nats", "bits", "bits_per_dim", "stderr"))
    assert {"nats", "bits", "stderr"} <= set(_resolve(doc, props["total_entropy"])["properties"])
    assert {"nats", "bits_per_dim", "prior_nats"} <= set(
        _resolve(doc, props["density_bound"])["properties"])
    assert {"nats", "stderr"} <= set(_resolve(doc, props["data_entropy"])["properties"])
    summary = _resolve(doc, props["summary"])["properties"]
    assert {"neural_entropy", "total_entropy", "n_evaluations", "dim"} <= set(summary)
    repro = _resolve(doc, props["reproducibility"])["properties"]
    assert {"data_sha256", "process", "estimator", "seed", "code_version"} <= set(repro)
    job = _resolve(doc, doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]
                   ["application/json"]["schema"])
    request = job["properties"]["request"]
    kinds = {_resolve(doc, option)["title"] for option in request["oneOf"]}
    assert kinds == {"TrainJobSpec", "MeasureJobSpec", "SampleJobSpec"}
    assert _resolve(doc, job["properties"]["progress"])["title"] == "JobProgress"
