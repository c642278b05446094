"""Metrics a service's modules make when they are imported, made afresh on each import.

BentoML's documented way to add a metric is ``bentoml.metrics.Counter(...)`` at module
level, which registers it in the process's Prometheus registry. A process that loads a
Bento again (a notebook or driver calling ``deployment()`` twice, for the same Bento or a
new version of it) re-imports the service's modules, and the registry refused the second
registration (``DuplicateTimeseries``). So the collectors a load registers are recorded,
and the next load takes them out of the registry first: the latest import's metrics are
the ones registered, as if the process had started afresh.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import prometheus_client

#: What the last load registered (one list per process: replicas load once, drivers reload).
_registered: list[Any] = []


@contextlib.contextmanager
def metrics_of_this_import(registry: Any = prometheus_client.REGISTRY) -> Iterator[None]:
    """Unregister the last load's collectors; record what registers inside the block."""
    for collector in _registered:
        with contextlib.suppress(KeyError):  # unregistered by its own code meanwhile
            registry.unregister(collector)
    _registered.clear()
    register = registry.register

    def recorded(collector: Any) -> None:
        register(collector)
        _registered.append(collector)

    registry.register = recorded  # this instance only, until the load is done
    try:
        yield
    finally:
        del registry.register
