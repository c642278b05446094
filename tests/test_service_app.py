"""The root replica's HTTP app for a 1.2+ service: BentoML's own, lightened where Ray does the work.

A real 1.2+ service in BentoML's app, in process (Starlette's test client; the same app
answers through Ray in ``test_services``, ``test_bad_input`` and ``test_contract``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.testclient import TestClient

from bentoml_ray import _service_deployment
from bentoml_ray._bentoml_internals import (
    AccessLogMiddleware,
    MaxConcurrencyMiddleware,
    RunnerTrafficMetricsMiddleware,
)
from bentoml_ray._request_timeout import RequestTimeout
from bentoml_ray._service_deployment import RayServiceAppFactory


@bentoml.service(traffic={"timeout": 1, "max_concurrency": 8})
class AppProbe:
    def __init__(self) -> None:
        self.cancelled = 0

    @bentoml.api
    def echo(self, text: str) -> str:
        return text

    @bentoml.api
    async def stuck(self) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "never"


def _factory() -> RayServiceAppFactory:
    service: Any = AppProbe
    service.inject_config()
    return RayServiceAppFactory(service, is_main=True, batching={})


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """BentoML's tracing with an exporter, as ``tracing.exporter_type`` in its config sets.

    (Read from BentoML's configuration in ``test_bentoml_internals``.)
    """
    monkeypatch.setattr(_service_deployment, "tracing_exporter_type", lambda: "otlp")


def _middleware_classes(factory: RayServiceAppFactory) -> list[type]:
    return [middleware.cls for middleware in factory.middlewares]


def test_ray_does_the_concurrency_limit_metrics_access_log_and_untraced_spans() -> None:
    classes = _middleware_classes(_factory())
    for gone in (
        MaxConcurrencyMiddleware,
        RunnerTrafficMetricsMiddleware,
        AccessLogMiddleware,
        OpenTelemetryMiddleware,
    ):
        assert gone not in classes, classes
    assert RequestTimeout in classes


def test_tracing_stays_when_it_has_an_exporter(traced: None) -> None:
    factory = _factory()
    assert OpenTelemetryMiddleware in _middleware_classes(factory)
    with TestClient(factory()) as client:
        response = client.post("/echo", json={"text": "hi"})
    assert response.status_code == 200 and response.text == "hi"
    assert response.headers["server"] == "BentoML Service/AppProbe"
    assert response.headers["x-bentoml-request-id"]  # BentoML's own, from the span


def test_untraced_answers_carry_the_server_name_only() -> None:
    with TestClient(_factory()()) as client:
        response = client.post("/echo", json={"text": "hi"})
        bad = client.post("/echo", json={"wrong": "field"})
    assert response.status_code == 200 and response.text == "hi"
    assert response.headers["server"] == "BentoML Service/AppProbe"
    assert "x-bentoml-request-id" not in response.headers
    assert bad.status_code == 400 and bad.headers["server"] == "BentoML Service/AppProbe"


def test_the_services_traffic_timeout_gives_bentomls_504_and_cancels_the_call() -> None:
    factory = _factory()
    with TestClient(factory()) as client:
        response = client.post("/stuck", json={})
        instance = factory._service_instance
    assert response.status_code == 504
    assert response.json() == {"error": "Not able to process the request in 1 seconds"}
    assert instance.cancelled == 1
