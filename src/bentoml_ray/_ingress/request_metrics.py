"""BentoML's request metrics, as ``bentoml serve`` exports them, kept by the public ingress.

``bentoml serve`` counts and times every request in a middleware of its app:
``<namespace>_request_total``, ``_request_duration_seconds`` and ``_request_in_progress``
(and ``_last_request_timestamp_seconds``), labelled with the path, the Bento's name and
version, the answer's status and, for a 1.2+ service, the service's name (``runner_name``).
Dashboards query them by those names. The ingress (``IngressFrame``) keeps the same
metrics in the replica's registry, from which ``/metrics`` and Ray's metrics pipeline read
them.

BentoML's middleware updates four ``prometheus_client`` series per request, each behind a
lock, after looking each up by its labels: about 10 us a request here. A replica's
requests all run on its one event loop, so the counts are plain numbers instead, turned
into Prometheus families only when the registry is read (``RequestCounts.collect``):
about 2 us.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import prometheus_client
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._bentoml_internals import request_metrics_config


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


@dataclass
class _Answered:
    """The requests of one path that got one status: their count, total time, buckets."""

    count: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=list)


class RequestCounts:
    """A collector in the replica's registry: the request metrics of one spec's service."""

    def __init__(self, spec: RequestMetricsSpec) -> None:
        self.spec = spec
        self.bounds = sorted(b for b in spec.buckets if not math.isinf(b))
        self.answered: dict[tuple[str, int], _Answered] = {}
        self.in_flight: dict[str, int] = {}
        self.last_request: float | None = None

    def started(self, path: str) -> float:
        """A request of ``path`` began: it is in progress; returns its start time."""
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        return time.perf_counter()

    def ended(self, path: str, status: int, started: float) -> None:
        """A request that ``started`` got ``status``: counted, timed, no longer in progress."""
        self.in_flight[path] -= 1
        self.answer(path, status, time.perf_counter() - started)

    def answer(self, path: str, status: int, seconds: float) -> None:
        entry = self.answered.get((path, status))
        if entry is None:
            entry = self.answered[(path, status)] = _Answered(buckets=[0] * (len(self.bounds) + 1))
        entry.count += 1
        entry.seconds += seconds
        entry.buckets[bisect.bisect_left(self.bounds, seconds)] += 1  # le: value <= bound

    def collect(self) -> Iterator[Metric]:
        spec, ns = self.spec, self.spec.namespace
        extra = [spec.runner_name] if spec.runner_name is not None else []
        extra_names = ["runner_name"] if spec.runner_name is not None else []
        by_answer = ["endpoint", "service_name", "service_version", "http_response_code"]
        total = CounterMetricFamily(
            f"{ns}_request", "Total number of HTTP requests", labels=by_answer + extra_names
        )
        duration = HistogramMetricFamily(
            f"{ns}_request_duration_seconds", "API HTTP request duration in seconds",
            labels=by_answer + extra_names,
        )  # fmt: skip
        for (path, status), entry in list(self.answered.items()):
            labels = [path, spec.bento_name, spec.bento_version, str(status), *extra]
            total.add_metric(labels, entry.count)
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, math.inf], entry.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            duration.add_metric(labels, buckets, entry.seconds)
        in_progress = GaugeMetricFamily(
            f"{ns}_request_in_progress", "Total number of HTTP requests in progress now",
            labels=["endpoint", "service_name", "service_version", *extra_names],
        )  # fmt: skip
        for path, count in list(self.in_flight.items()):
            in_progress.add_metric([path, spec.bento_name, spec.bento_version, *extra], count)
        yield from (total, duration, in_progress)
        if self.last_request is not None:
            last = GaugeMetricFamily(
                f"{ns}_last_request_timestamp_seconds", "Timestamp of the last received request",
                labels=["service_name", "service_version", *extra_names],
            )  # fmt: skip
            last.add_metric([spec.bento_name, spec.bento_version, *extra], self.last_request)
            yield last


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus writes it (``0.005``, ``1.0``, ``+Inf``)."""
    le: str = prometheus_client.utils.floatToGoString(bound)  # type: ignore[no-untyped-call]
    return le


#: One collector per namespace and process: a registry takes a name once, and a replica
#: serves one service (tests that build several apps in one process share it).
_collectors: dict[tuple[str, bool], RequestCounts] = {}


def request_counts(spec: RequestMetricsSpec) -> RequestCounts:
    """The process's collector for ``spec``'s service, registered on first use."""
    key = (spec.namespace, spec.runner_name is not None)
    if key not in _collectors:
        _collectors[key] = RequestCounts(spec)
        prometheus_client.REGISTRY.register(_collectors[key])
    return _collectors[key]


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
