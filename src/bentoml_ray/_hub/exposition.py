"""Many replicas' Prometheus registries as one exposition: what ``/metrics`` answers.

``bentoml serve`` reads its workers' metrics in Prometheus' multiprocess mode, which sums
counters and histograms over the workers; a gauge there is summed too, or kept per worker,
as its ``multiprocess_mode`` says. Here every replica reports its registry (``report``:
its families as plain tuples, so the hub parses no text) and the hub merges them:
counters, histograms and summaries are summed sample by sample (a replica that stopped
keeps its share, so totals never go down while the application lives); gauges, and
metrics of no declared type, are kept per live replica under a ``replica`` label, since a
sum of, say, start times means nothing. Counters' and histograms' ``_created`` times are
left out, as in ``bentoml serve``'s multiprocess view.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

SUMMED_TYPES = frozenset({"counter", "histogram", "gaugehistogram", "summary"})

#: One family of a replica's registry: name, type, help, unit, and its samples as
#: (sample name, labels, value).
Family = tuple[str, str, str, str, list[tuple[str, dict[str, str], float]]]


def report(registry: Any = REGISTRY) -> list[Family]:
    """``registry``'s families now, as a replica reports them to the hub."""
    return [
        (f.name, f.type, f.documentation, f.unit, [(s.name, s.labels, s.value) for s in f.samples])
        for f in registry.collect()
    ]


class _Families:
    """A collector that yields metric families already made."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_reports(reports: Mapping[str, Sequence[Family]], live: Collection[str]) -> bytes:
    """One exposition of every replica's report (replica -> families); gauges of ``live``."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for replica, replica_families in reports.items():
        for name, kind, documentation, unit, samples in replica_families:
            merged = families.get(name)
            if merged is None:
                merged = families[name] = Metric(name, documentation, kind, unit)
            if kind in SUMMED_TYPES:
                totals = sums.setdefault(name, {})
                for sample_name, labels, value in samples:
                    if sample_name.endswith("_created"):  # a start time: no sum of them
                        continue
                    key = (sample_name, tuple(labels.items()))
                    totals[key] = totals.get(key, 0.0) + value
            elif replica in live:
                merged.samples.extend(
                    Sample(sample_name, {**labels, "replica": replica}, value)
                    for sample_name, labels, value in samples
                )
    for name, totals in sums.items():
        families[name].samples.extend(
            Sample(sample_name, dict(labels), value)
            for (sample_name, labels), value in totals.items()
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([family for family in families.values() if family.samples]))
    return generate_latest(registry)
