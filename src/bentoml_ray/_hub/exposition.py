"""Many replicas' Prometheus text expositions as one: what ``/metrics`` answers.

``bentoml serve`` reads its workers' metrics in Prometheus' multiprocess mode, which sums
counters and histograms over the workers; a gauge there is summed too, or kept per worker,
as its ``multiprocess_mode`` says. Here every replica reports its own registry as text and
the hub merges them: counters, histograms and summaries are summed sample by sample (a
replica that stopped keeps its share, so totals never go down while the application
lives); gauges, and metrics of no declared type, are kept per live replica under a
``replica`` label, since a sum of, say, start times means nothing. Counters' and
histograms' ``_created`` times are left out, as in ``bentoml serve``'s multiprocess view.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

SUMMED_TYPES = frozenset({"counter", "histogram", "gaugehistogram", "summary"})


class _Families:
    """A collector that yields metric families already made."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_expositions(reports: Mapping[str, str], live: Collection[str]) -> bytes:
    """One exposition from each replica's (``reports``: replica -> text); gauges of ``live``."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for replica, text in reports.items():
        summed: set[str] = set()
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created") and family.name[: -len("_created")] in summed:
                continue  # a counter's or histogram's start time, as its own gauge: no sum
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            if family.type in SUMMED_TYPES:
                summed.add(family.name)
                totals = sums.setdefault(family.name, {})
                for sample in family.samples:
                    if sample.name.endswith("_created"):  # a start time: no sum of them
                        continue
                    key = (sample.name, tuple(sample.labels.items()))
                    totals[key] = totals.get(key, 0.0) + sample.value
            elif replica in live:
                merged.samples.extend(
                    Sample(sample.name, {**sample.labels, "replica": replica}, sample.value)
                    for sample in family.samples
                )
    for name, totals in sums.items():
        families[name].samples.extend(
            Sample(sample_name, dict(labels), value)
            for (sample_name, labels), value in totals.items()
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([family for family in families.values() if family.samples]))
    return generate_latest(registry)
