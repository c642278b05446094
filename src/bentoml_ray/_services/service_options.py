"""Ray Serve options implied by a 1.2+ service's own ``@bentoml.service(...)`` settings.

A service already says how it wants to run; on Ray that becomes the deployment's default
options, and anything the user passes to ``deployment()`` wins:

=========================  ==============================================================
``@bentoml.service``       Ray Serve
=========================  ==============================================================
``resources.cpu``          ``ray_actor_options.num_cpus`` (``"500m"`` is 0.5)
``resources.gpu``          ``ray_actor_options.num_gpus``
``resources.memory``       ``ray_actor_options.memory`` in bytes (``"2Gi"``, ``"512Mi"``)
``workers``                ``num_replicas`` (``"cpu_count"``: this machine's CPU count)
``traffic.max_concurrency``  ``max_ongoing_requests``, divided among workers as BentoML does
``traffic.timeout``        kept by the root's ``RequestTimeout`` (BentoML's 504), and by
                           the callers of a dependency, as in ``bentoml serve``
``threads``                sync API calls at a time in each replica (``WorkerThreads``)
``envs``                   ``runtime_env.env_vars``
``batchable`` APIs         ``serve.batch(max_batch_size=..., batch_wait_timeout_s=0)``
=========================  ==============================================================
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from .._batching_plan import MethodInfo
from .._defaults import MAX_ONGOING_REQUESTS, SERVICE_BATCH_WAIT_S

_MEMORY_UNITS = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}  # fmt: skip


def deployment_defaults(service: Any) -> dict[str, Any]:
    """``serve.deployment`` options that ``service``'s own config asks for."""
    config = service.config or {}
    options: dict[str, Any] = {}
    actor_options: dict[str, Any] = {}
    resources = config.get("resources") or {}
    if resources.get("cpu") is not None:
        actor_options["num_cpus"] = _cpus(resources["cpu"])
    if resources.get("gpu") is not None:
        actor_options["num_gpus"] = float(resources["gpu"])
    if resources.get("memory") is not None:
        actor_options["memory"] = _bytes(resources["memory"])
    if actor_options:
        options["ray_actor_options"] = actor_options

    workers = config.get("workers")
    replicas = 1
    if workers == "cpu_count":
        replicas = os.cpu_count() or 1
    elif isinstance(workers, int) and workers >= 1:
        replicas = workers
    if workers is not None:
        options["num_replicas"] = replicas

    max_concurrency = (config.get("traffic") or {}).get("max_concurrency")
    options["max_ongoing_requests"] = (
        math.ceil(max_concurrency / replicas) if max_concurrency else MAX_ONGOING_REQUESTS
    )
    return options


def service_env_vars(service: Any) -> dict[str, str]:
    """The ``envs`` a service declares with a value, for its replicas' runtime env."""
    return {env.name: str(env.value) for env in service.envs if env.value is not None}


def api_methods(service: Any) -> dict[str, MethodInfo]:
    """What batching needs of each API, with the service's own batch settings as defaults.

    BentoML's batching is adaptive: it sends a batch as soon as waiting longer would not
    pay, and ``max_latency_ms`` bounds a request's whole time in its queue. Ray's
    ``batch_wait_timeout_s`` is a fixed wait for a batch to fill, paid by every request
    at light load (two batched hops at Ray's default of 10 ms cut the composed example's
    requests/s at one connection by two thirds). So the wait is 0: a batch takes what
    queued while the previous one ran, which is one request at light load and a full batch
    under load. ``max_latency_ms`` has no Ray counterpart and is not applied.
    """
    return {
        name: MethodInfo(
            batchable=bool(api.batchable),
            defaults={
                "max_batch_size": int(api.max_batch_size),
                "batch_wait_timeout_s": SERVICE_BATCH_WAIT_S,
            }
            if api.batchable
            else {},
        )
        for name, api in service.apis.items()
    }


def _cpus(value: object) -> float:
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def _bytes(value: object) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]i?)?b?\s*", str(value), re.IGNORECASE)
    if match is None:
        raise ValueError(f"cannot read {value!r} as an amount of memory")
    return int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "").lower()])
