"""BentoML's request metrics, as ``bentoml serve`` exports them, kept by the public ingress.

``bentoml serve`` counts and times every request in a middleware of its app:
``<namespace>_request_total``, ``_request_duration_seconds`` and ``_request_in_progress``
(and ``_last_request_timestamp_seconds``), labelled with the path, the Bento's name and
version, the answer's status and, for a 1.2+ service, the service's name (``runner_name``).
Dashboards query them by those names. The ingress keeps the same metrics in the replica's
registry, from which ``/metrics`` and Ray's metrics pipeline read them. BentoML's
middleware looks each labelled series up on every request; here each path's series are
looked up once, which keeps their cost per request to a few microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import prometheus_client
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._bentoml_internals import request_metrics_config
from .guard import route_path

#: Series looked up at most once per (path, status); beyond this many paths (a client
#: probing random paths) they are looked up per request instead.
_MAX_CACHED = 1024


@dataclass(frozen=True)
class RequestMetricsSpec:
    """What ``bentoml serve`` names and labels its request metrics for one service."""

    namespace: str
    bento_name: str
    bento_version: str
    #: ``runner_name`` (a 1.2+ service's name), which runner-based services' metrics lack.
    runner_name: str | None
    buckets: Sequence[float]
    #: Paths whose requests do not move the last-request timestamp (the health probes).
    skip_paths: Sequence[str] = ("/metrics", "/healthz", "/livez", "/readyz")


_made: dict[tuple[str, bool], tuple[Any, Any, Any, Any]] = {}


def _metrics(spec: RequestMetricsSpec) -> tuple[Any, Any, Any, Any]:
    """The four metrics of ``spec``'s namespace, made once per process.

    A registry takes a name once; a replica serves one service, so the first spec's
    buckets are its only ones (tests that build several apps in one process share them).
    """
    key = (spec.namespace, spec.runner_name is not None)
    if key not in _made:
        extra = ["runner_name"] if spec.runner_name is not None else []
        by_request = ["endpoint", "service_name", "service_version", "http_response_code", *extra]
        _made[key] = (
            prometheus_client.Counter(
                "request_total", "Total number of HTTP requests", by_request,
                namespace=spec.namespace,
            ),
            prometheus_client.Histogram(
                "request_duration_seconds", "API HTTP request duration in seconds", by_request,
                namespace=spec.namespace, buckets=spec.buckets,
            ),
            prometheus_client.Gauge(
                "request_in_progress", "Total number of HTTP requests in progress now",
                ["endpoint", "service_name", "service_version", *extra],
                namespace=spec.namespace,
            ),
            prometheus_client.Gauge(
                "last_request_timestamp_seconds", "Timestamp of the last received request",
                ["service_name", "service_version", *extra], namespace=spec.namespace,
            ),
        )  # fmt: skip
    return _made[key]


class RequestMetrics:
    """ASGI middleware: counts, times and tracks every HTTP request but ``metrics_path``'s."""

    def __init__(self, app: ASGIApp, spec: RequestMetricsSpec, metrics_path: str) -> None:
        self.app = app
        self.metrics_path = metrics_path
        self._skip = tuple(spec.skip_paths)
        self._total, self._duration, self._in_progress, last = _metrics(spec)
        self._constant = [spec.bento_name, spec.bento_version]
        self._extra = [spec.runner_name] if spec.runner_name is not None else []
        self._last = last.labels(*self._constant, *self._extra)
        self._by_answer: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._by_path: dict[str, Any] = {}

    def _answered(self, path: str, status: int) -> tuple[Any, Any]:
        series = self._by_answer.get((path, status))
        if series is None:
            labels = (path, *self._constant, str(status), *self._extra)
            series = (self._total.labels(*labels), self._duration.labels(*labels))
            if len(self._by_answer) < _MAX_CACHED:
                self._by_answer[(path, status)] = series
        return series

    def _in_flight(self, path: str) -> Any:
        gauge = self._by_path.get(path)
        if gauge is None:
            gauge = self._in_progress.labels(path, *self._constant, *self._extra)
            if len(self._by_path) < _MAX_CACHED:
                self._by_path[path] = gauge
        return gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope) or "/"  # the path in the application, as ``bentoml serve``
        if path == self.metrics_path:
            await self.app(scope, receive, send)
            return
        if not path.startswith(self._skip):
            self._last.set(time.time())
        start = time.perf_counter()
        status = 0

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                total, duration = self._answered(path, status)
                total.inc()
                duration.observe(max(time.perf_counter() - start, 0.0))
            await send(message)

        gauge = self._in_flight(path)
        gauge.inc()
        try:
            await self.app(scope, receive, send_counted)
        finally:
            gauge.dec()


def request_metrics_spec(
    bento_name: str, bento_version: str | None, runner_name: str | None = None
) -> RequestMetricsSpec | None:
    """The spec BentoML's configuration asks for (None: its metrics are turned off)."""
    enabled, namespace, buckets = request_metrics_config()
    if not enabled:
        return None
    return RequestMetricsSpec(
        namespace, bento_name, bento_version or "not available", runner_name, buckets
    )
