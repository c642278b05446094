"""The root replica's HTTP app for a 1.2+ service: BentoML's own, lightened where Ray does the work.

A real 1.2+ service in BentoML's app, in process (Starlette's test client; the same app
answers through Ray in ``test_services``, ``test_bad_input`` and ``test_contract``).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import bentoml
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bentoml_ray import _service_deployment
from bentoml_ray._bentoml_internals import (
    AccessLogMiddleware,
    MaxConcurrencyMiddleware,
    RunnerTrafficMetricsMiddleware,
)
from bentoml_ray._body_limit import LimitRequestBody
from bentoml_ray._public_ingress import RefuseInternalMediaTypes
from bentoml_ray._replica_metrics import ServeReplicaMetrics
from bentoml_ray._request_timeout import RequestTimeout
from bentoml_ray._service_deployment import RayServiceAppFactory

PICKLE = "application/vnd.bentoml+pickle"


@bentoml.service(traffic={"timeout": 1, "max_concurrency": 8})
class AppProbe:
    def __init__(self) -> None:
        self.cancelled = 0

    @bentoml.api
    def echo(self, text: str) -> str:
        return text

    @bentoml.api
    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return threading.current_thread().name

    @bentoml.api
    def count(self, upto: int) -> Generator[str, None, None]:
        for number in range(upto):
            yield str(number)

    @bentoml.api
    def first(self, items: list[str]) -> str:
        return next(iter(items))  # StopIteration for no items: the API's own error

    @bentoml.api
    async def stuck(self) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "never"


@pytest.fixture(autouse=True, scope="module")
def _bentoml_config_restored() -> Iterator[None]:
    """``inject_config`` swaps BentoML's process-wide configuration for the 1.2+ form; the
    tests after these build runner-based Bentos in this process, which need the other."""
    saved = copy.deepcopy(BentoMLContainer.config.get())
    yield
    BentoMLContainer.config.set(saved)


def _factory(service: Any = AppProbe) -> RayServiceAppFactory:
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


def test_a_services_own_middlewares_stay_whatever_their_class() -> None:
    @bentoml.service
    class SelfTraced:
        @bentoml.api
        def echo(self, text: str) -> str:
            return text

    service: Any = SelfTraced
    service.add_asgi_middleware(OpenTelemetryMiddleware)
    service.add_asgi_middleware(AccessLogMiddleware, has_request_content_length=False)
    classes = _middleware_classes(_factory(service))
    assert classes.count(OpenTelemetryMiddleware) == 1  # the service's; BentoML's is gone
    assert classes.count(AccessLogMiddleware) == 1


def test_a_sync_generator_api_streams_and_stop_iteration_is_a_500() -> None:
    with TestClient(_factory()()) as client:
        streamed = client.post("/count", json={"upto": 3})
        failed = client.post("/first", json={"items": []})
        after = client.post("/first", json={"items": ["a"]})
    assert streamed.status_code == 200 and streamed.text == "012"
    assert failed.status_code == 500
    assert after.status_code == 200 and after.text == "a"


def test_a_timed_out_sync_call_does_not_hold_up_the_next_one() -> None:
    """threads=1: the abandoned call sleeps on in its thread; the next gets another."""
    with TestClient(_factory()()) as client:
        started = time.monotonic()
        timed_out = client.post("/nap", json={"seconds": 2.5})
        quick = client.post("/nap", json={"seconds": 0})
        took = time.monotonic() - started
    assert timed_out.status_code == 504
    assert quick.status_code == 200 and quick.text == "AppProbe_1"
    assert took < 2.4, took  # did not wait for the sleeping call


@pytest.mark.parametrize("prefix", ["/", "/p"])
def test_the_public_app_is_starlette_with_the_guards_in_front(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Serve names routes (its metrics' ``route`` label) only from a Starlette app."""
    from bentoml_ray._public_ingress import public_app

    monkeypatch.setenv("BENTOML_RAY_MAX_REQUEST_BODY_SIZE", "64")
    service_app = _factory()()
    app = public_app(service_app, prefix, error_body=lambda message: {"error": message})
    assert isinstance(app, Starlette)
    guards = [RefuseInternalMediaTypes, LimitRequestBody, ServeReplicaMetrics]
    assert [m.cls for m in service_app.user_middleware[:3]] == guards  # outermost first
    base = prefix.rstrip("/")

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        yield b"x" * 100
        yield b'"}'

    with TestClient(app) as client:
        echoed = client.post(f"{base}/echo", json={"text": "hi"})
        pickled = client.post(f"{base}/echo", content=b"\x80\x04", headers={"content-type": PICKLE})
        streamed = client.post(f"{base}/echo", content=chunks())
        metrics = client.get(f"{base}/metrics")
    assert echoed.status_code == 200 and echoed.text == "hi"
    assert pickled.status_code == 415 and "internal to BentoML" in pickled.json()["error"]
    assert streamed.status_code == 413 and "(64 bytes)" in streamed.json()["error"]
    assert metrics.status_code == 200 and "process_" in metrics.text  # the replica's registry
