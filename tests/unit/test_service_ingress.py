"""The public ingress of a 1.2+ root service: BentoML's own app, lightened where Ray does the work.

A real 1.2+ service in BentoML's app, in process (Starlette's test client; the same app
answers through Ray in ``integration/test_services``, ``test_bad_input`` and
``test_contract``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import bentoml
import pytest
from _support import bentoml_config_restored, picked_route
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bentoml_ray._bentoml_internals import (
    AccessLogMiddleware,
    ContextMiddleware,
    MaxConcurrencyMiddleware,
    RunnerTrafficMetricsMiddleware,
    TimeoutMiddleware,
    service_instance,
)
from bentoml_ray._ingress.body_limit import LimitRequestBody
from bentoml_ray._ingress.frame import IngressFrame
from bentoml_ray._ingress.gate import PublicGate
from bentoml_ray._ingress.media_types import RefuseInternalMediaTypes
from bentoml_ray._ingress.metrics import ReplicaMetrics
from bentoml_ray._services import app_factory
from bentoml_ray._services.app_factory import RayServiceAppFactory
from bentoml_ray._services.deployments import service_ingress

PICKLE = "application/vnd.bentoml+pickle"


@bentoml.service(traffic={"timeout": 0.5, "max_concurrency": 8})
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
    def scale(self, rows: list[list[float]], factor: float = 2.0) -> list[list[float]]:
        return [[value * factor for value in row] for row in rows]

    @bentoml.api(route="/v1/whoami")
    def whoami(self, ctx: bentoml.Context) -> dict[str, Any]:
        ctx.response.status_code = 201
        ctx.response.headers["x-seen-path"] = ctx.request.url.path
        return {"path": ctx.request.url.path, "url": str(ctx.request.url_for("whoami"))}

    @bentoml.api
    async def stuck(self) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "never"


_bentoml_config_restored = pytest.fixture(autouse=True, scope="module")(bentoml_config_restored)


def _factory(service: Any = AppProbe) -> RayServiceAppFactory:
    service.inject_config()
    return RayServiceAppFactory(service, is_main=True, batching={})


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """BentoML's tracing with an exporter, as ``tracing.exporter_type`` in its config sets.

    (Read from BentoML's configuration in ``test_bentoml_internals``.)
    """
    monkeypatch.setattr(app_factory, "tracing_exporter_type", lambda: "otlp")


def _middleware_classes(factory: RayServiceAppFactory) -> list[type]:
    return [middleware.cls for middleware in factory.middlewares]


def _ingress(factory: RayServiceAppFactory, prefix: str = "/") -> Starlette:
    return service_ingress(factory, prefix)


def test_ray_does_the_concurrency_limit_metrics_access_log_and_untraced_spans() -> None:
    """And the ingress the timeout: BentoML's request context is all that is left."""
    factory = _factory()
    assert _middleware_classes(factory) == [ContextMiddleware]
    assert factory.only_request_context
    for gone in (
        MaxConcurrencyMiddleware,
        RunnerTrafficMetricsMiddleware,
        AccessLogMiddleware,
        OpenTelemetryMiddleware,
        TimeoutMiddleware,
    ):
        assert gone not in _middleware_classes(factory)


def test_tracing_stays_when_it_has_an_exporter(traced: None) -> None:
    factory = _factory()
    assert OpenTelemetryMiddleware in _middleware_classes(factory)
    assert not factory.only_request_context  # tracing must see every request
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


def test_each_api_function_is_made_once_and_answers_as_before() -> None:
    factory = _factory()
    with TestClient(_ingress(factory)) as client:
        instance = service_instance(factory)
        assert instance.echo is instance.echo and instance.echo.local is instance.echo.local
        first = client.post("/scale", json={"rows": [[1.0, 2.0]]})
        again = client.post("/scale", json={"rows": [[1.0]], "factor": 3.0})
    assert first.json() == [[2.0, 4.0]] and again.json() == [[3.0]]


def test_the_services_traffic_timeout_gives_bentomls_504_and_cancels_the_call() -> None:
    factory = _factory()
    with TestClient(_ingress(factory)) as client:
        response = client.post("/stuck", json={})
        instance = service_instance(factory)
    assert response.status_code == 504
    assert response.json() == {"error": "Not able to process the request in 0.5 seconds"}
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
    factory = _factory(service)
    classes = _middleware_classes(factory)
    assert classes.count(OpenTelemetryMiddleware) == 1  # the service's; BentoML's is gone
    assert classes.count(AccessLogMiddleware) == 1
    # They must see every API request, so none skips the router.
    assert not factory.only_request_context
    app = _ingress(factory)
    assert PublicGate(app.router, **app.user_middleware[1].kwargs).direct == {}
    with TestClient(app) as client:
        assert client.post("/echo", json={"text": "hi"}).text == "hi"


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
    with TestClient(_ingress(_factory())) as client:
        started = time.monotonic()
        timed_out = client.post("/nap", json={"seconds": 4.0})
        quick = client.post("/nap", json={"seconds": 0})
        took = time.monotonic() - started
    assert timed_out.status_code == 504
    assert quick.status_code == 200 and quick.text == "AppProbe_1"
    # Did not wait for the sleeping call: 0.5 s of timeout, then an instant answer; the
    # margin is wide, as the session's Bento builds and mypy run beside the unit tests.
    assert took < 3.5, took


@pytest.mark.parametrize("prefix", ["/", "/p"])
def test_the_public_app_is_starlette_with_the_guards_in_front(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Serve names routes (its metrics' ``route`` label) only from a Starlette app."""
    monkeypatch.setenv("BENTOML_RAY_MAX_REQUEST_BODY_SIZE", "64")
    app = _ingress(_factory(), prefix)
    assert isinstance(app, Starlette)
    # Outermost first: metrics and timeout in one frame, the gate with its guards, then
    # BentoML's own app.
    assert [m.cls for m in app.user_middleware] == [IngressFrame, PublicGate]
    gate = PublicGate(app.router, **app.user_middleware[1].kwargs)
    assert [type(guard) for guard in gate.guards] == [
        RefuseInternalMediaTypes, LimitRequestBody, ReplicaMetrics
    ]  # fmt: skip
    assert [m.cls for m in gate.service.user_middleware] == [ContextMiddleware]
    base = prefix.rstrip("/")
    assert {f"{base}/echo", f"{base}/scale", f"{base}/v1/whoami"} <= set(gate.direct)

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


def _chunked(body: bytes) -> Iterator[bytes]:
    """The body in two chunks: no declared length, so the request takes the full app."""
    yield body[:1]
    yield body[1:]


@pytest.mark.parametrize("prefix", ["/", "/p"])
@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/scale", b'{"rows": [[1, 2]]}', "application/json"),
        ("/scale", b'{"rows": [[1, 2]], "factor": 3}', "application/json"),
        ("/scale", b'{"rows": [["a"]]}', "application/json"),  # wrong type: 400
        ("/scale", b'{"rows": [[1, 2]]', "application/json"),  # malformed JSON: 400
        ("/scale", b'{"nothing": 1}', "application/json"),  # a missing field: 400
        ("/scale", b"\x80\x04", PICKLE),  # internal: 415
        ("/scale", b"x" * 100, "application/json"),  # over the 64-byte limit: 413
        ("/v1/whoami", b"{}", "application/json"),  # the request context: path, status
        ("/first", b'{"items": []}', "application/json"),  # the API raised: 500
        ("/stuck", b"{}", "application/json"),  # 504, the call cancelled
        ("/metrics", b"", "application/json"),  # the replica's /metrics is GET only: 405
    ],
)
def test_both_ways_answer_alike(
    prefix: str, path: str, body: bytes, content_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declared body length goes straight to the endpoint, a chunked one through it all."""
    monkeypatch.setenv("BENTOML_RAY_MAX_REQUEST_BODY_SIZE", "64")
    app = _ingress(_factory(), prefix)
    url = prefix.rstrip("/") + path
    headers = {"content-type": content_type}
    with TestClient(app) as client:
        direct = client.post(url, content=body, headers=headers)
        routed = client.post(url, content=_chunked(body), headers=headers)
    assert "content-length" not in routed.request.headers
    assert (direct.status_code, direct.content) == (routed.status_code, routed.content)
    for header in ("content-type", "server", "x-seen-path"):
        assert direct.headers.get(header) == routed.headers.get(header), header
    if path == "/v1/whoami":
        assert direct.status_code == 201
        assert direct.json() == {"path": url, "url": f"http://testserver{url}"}


def test_the_api_routes_go_first_and_the_router_picks_as_before() -> None:
    """Ray Serve names each request's route by trying the routes in order."""
    app = _ingress(_factory()).routes[0].app  # type: ignore[attr-defined]  # the mounted app
    names = [getattr(route, "name", None) for route in app.routes]
    apis: list[str] = list(AppProbe.apis)  # type: ignore[attr-defined]
    assert len(apis) == 7 and names[: len(apis)] == apis
    declared = _factory().routes  # BentoML's order, before the app's own additions

    for method in ("GET", "POST"):
        for path in ["/echo", "/v1/whoami", "/metrics", "/livez", "/readyz", "/nowhere"]:
            assert picked_route(app.routes, method, path) == picked_route(declared, method, path), (
                path
            )
