"""BentoML's request metrics as the public ingress keeps them: names, labels, counts."""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bentoml_ray._ingress.frame import IngressFrame
from bentoml_ray._ingress.request_metrics import RequestMetricsSpec

BUCKETS = (0.005, 0.01, 0.1, 1.0, float("inf"))


def _app(runner_name: str | None) -> Starlette:
    async def ok(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def teapot(_: object) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=418)

    inner = Starlette(routes=[Route("/ok", ok), Route("/teapot", teapot)])
    spec = RequestMetricsSpec(
        f"test_{runner_name or 'legacy'}", "bento", "v1", runner_name, BUCKETS
    )
    # The ingress's frame keeping only the metrics (no timeout).
    return IngressFrame(inner, None, spec, "/metrics")  # type: ignore[return-value]


def _families(namespace: str) -> dict[str, Any]:
    text = prometheus_client.generate_latest().decode()
    return {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith(namespace)}


def test_names_labels_and_counts_as_bentoml_serves_them() -> None:
    client = TestClient(_app("Svc"))
    for _ in range(3):
        client.get("/ok")
    client.get("/teapot")
    client.get("/metrics")  # not counted
    families = _families("test_Svc")
    total = families["test_Svc_request"]
    samples = {(s.labels["endpoint"], s.labels["http_response_code"]): s for s in total.samples}
    assert samples[("/ok", "200")].value == 3 and samples[("/teapot", "418")].value == 1
    assert ("/metrics", "200") not in samples
    assert samples[("/ok", "200")].labels == {
        "endpoint": "/ok", "service_name": "bento", "service_version": "v1",
        "http_response_code": "200", "runner_name": "Svc",
    }  # fmt: skip
    duration = families["test_Svc_request_duration_seconds"]
    buckets = [
        s for s in duration.samples if s.name.endswith("_bucket") and s.labels["endpoint"] == "/ok"
    ]
    assert [s.labels["le"] for s in buckets] == ["0.005", "0.01", "0.1", "1.0", "+Inf"]
    assert buckets[-1].value == 3
    in_progress = families["test_Svc_request_in_progress"]
    assert {s.value for s in in_progress.samples} == {0}
    assert "test_Svc_last_request_timestamp_seconds" in families


def test_runner_based_services_have_no_runner_name() -> None:
    client = TestClient(_app(None))
    client.get("/ok")
    (sample,) = _families("test_legacy")["test_legacy_request"].samples
    assert "runner_name" not in sample.labels
