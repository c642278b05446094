"""The replica's Prometheus registry, mirrored into Ray's metrics pipeline.

Ray's metrics agent on each node exports what a replica records through
``ray.serve.metrics`` (with the ``application``, ``deployment`` and ``replica`` tags Ray
adds, and Ray's ``ray_`` prefix on every name), but never reads ``prometheus_client``
registries, where BentoML's request metrics and a service's own ``bentoml.metrics``
live. So every ``MIRROR_S`` the replica reads its registry and records what changed:
a counter's increase, a gauge's value, a histogram's new observations bucket by bucket.
A cluster's Prometheus that scrapes Ray then sees them without scraping the application.

Ray's histograms take single observations only; each new one is recorded at the middle
of its bucket (beyond the last bound: twice that bound), so bucket counts and ``_count``
are exact and ``_sum`` is close. The process's own figures (``process_*``, ``python_*``)
are left out: Ray exports its workers' own.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client.samples import Sample
from ray.serve import metrics as serve_metrics

from .._defaults import RAY_METRICS_MIRROR_S

logger = logging.getLogger("bentoml_ray")

MIRROR_S = RAY_METRICS_MIRROR_S  # ``_defaults``
_LEFT_OUT = ("process_", "python_")
#: Tags Ray sets itself on a replica's metrics; a label of the same name is renamed.
_RAY_TAGS = frozenset({"application", "deployment", "replica"})

Labels = tuple[tuple[str, str], ...]


def _tags(labels: dict[str, str]) -> dict[str, str]:
    return {(f"exported_{k}" if k in _RAY_TAGS else k): str(v) for k, v in labels.items()}


class RayMetricsMirror:
    def __init__(self, registry: Any = prometheus_client.REGISTRY) -> None:
        self._registry = registry
        self._metrics: dict[tuple[str, str, tuple[str, ...]], Any] = {}
        self._last: dict[tuple[str, Labels], float] = {}
        self._refused: set[str] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(MIRROR_S)
            self.mirror()

    def mirror(self) -> None:
        """Record in Ray's metrics what changed in the registry since the last call."""
        for family in self._registry.collect():
            if family.name.startswith(_LEFT_OUT) or family.name in self._refused:
                continue
            try:
                self._mirror_family(family)
            except Exception:  # one Ray cannot take (a reserved name, say): the others go on
                self._refused.add(family.name)
                logger.exception("Metric %s cannot go to Ray's metrics; left out.", family.name)

    def _mirror_family(self, family: Any) -> None:
        if family.type == "counter":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    self._add(sample, family.documentation)
        elif family.type == "gauge":
            for sample in family.samples:
                tags = _tags(sample.labels)
                gauge = self._metric(serve_metrics.Gauge, sample.name, family.documentation, tags)
                gauge.set(sample.value, tags=tags)
        elif family.type == "histogram":
            self._histogram(family.name, family.documentation, family.samples)

    def _metric(self, kind: Any, name: str, doc: str, tags: dict[str, str], **extra: Any) -> Any:
        key = (kind.__name__, name, tuple(tags))
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._metrics[key] = kind(
                name, description=doc or name, tag_keys=tuple(tags), **extra
            )
        return metric

    def _increase(self, name: str, labels: dict[str, str], value: float) -> float:
        key = (name, tuple(sorted(labels.items())))
        increase = value - self._last.get(key, 0.0)
        self._last[key] = value
        return increase

    def _add(self, sample: Sample, doc: str) -> None:
        increase = self._increase(sample.name, sample.labels, sample.value)
        if increase > 0:
            tags = _tags(sample.labels)
            self._metric(serve_metrics.Counter, sample.name, doc, tags).inc(increase, tags=tags)

    def _histogram(self, name: str, doc: str, samples: Iterable[Sample]) -> None:
        series: dict[Labels, list[tuple[float, float]]] = {}
        for sample in samples:
            if sample.name.endswith("_bucket"):
                labels = tuple((k, v) for k, v in sample.labels.items() if k != "le")
                bound = float(sample.labels["le"])
                series.setdefault(labels, []).append((bound, sample.value))
        for labels, buckets in series.items():
            buckets.sort()
            bounds = [bound for bound, _ in buckets if not math.isinf(bound)]
            if not bounds or bounds[0] <= 0:  # Ray takes positive bounds only
                continue
            tags = _tags(dict(labels))
            histogram = self._metric(serve_metrics.Histogram, name, doc, tags, boundaries=bounds)
            lower = below = 0.0
            for bound, cumulative in buckets:  # counts are cumulative: take each bucket's own
                key = {**dict(labels), "le": str(bound)}
                new = int(self._increase(f"{name}_bucket", key, cumulative - below))
                middle = 2 * bounds[-1] if math.isinf(bound) else (lower + bound) / 2
                for _ in range(new):
                    histogram.observe(middle, tags=tags)
                lower, below = bound, cumulative
