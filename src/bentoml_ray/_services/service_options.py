"""Ray Serve options implied by a 1.2+ service's own ``@bentoml.service(...)`` settings.

A service already says how it wants to run; on Ray that becomes the deployment's default
options, and anything the user passes to ``deployment()`` wins:

=========================  ==============================================================
``@bentoml.service``       Ray Serve
=========================  ==============================================================
``resources.cpu``          ``ray_actor_options.num_cpus`` (``"500m"`` is 0.5)
``resources.gpu``          ``ray_actor_options.num_gpus``
``resources.memory``       ``ray_actor_options.memory`` in bytes (``"2Gi"``, ``"512Mi"``)
``resources.gpu_type``     ``ray_actor_options.accelerator_type``, as Ray names the card
``resources.tpu_type``     ``ray_actor_options.accelerator_type`` of the TPU generation
``workers``                ``num_replicas`` (``"cpu_count"``: this machine's CPU count)
``traffic.max_concurrency``  ``max_ongoing_requests``, divided among workers as BentoML does
``traffic.concurrency``    ``autoscaling_config.target_ongoing_requests``, where the user
                           turns autoscaling on (BentoML's autoscaler aims at it too)
``traffic.timeout``        kept by the root's ``RequestTimeout`` (BentoML's 504), and by
                           the callers of a dependency, as in ``bentoml serve``
``threads``                sync API calls at a time in each replica (``WorkerThreads``)
``envs``                   ``runtime_env.env_vars``; an entry without a value takes the
                           driver's environment at ``deployment()`` time
``batchable`` APIs         ``serve.batch(max_batch_size=..., batch_wait_timeout_s=0)``
=========================  ==============================================================
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from .._batching_plan import MethodInfo
from .._defaults import MAX_ONGOING_REQUESTS, SERVICE_BATCH_WAIT_S
from .._errors import InvalidDeploymentConfig

_MEMORY_UNITS = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}  # fmt: skip

#: BentoML's ``resources.gpu_type`` names, as Ray 2.60's accelerator detection names the
#: same card on a node (``NVIDIA H100 80GB HBM3`` is ``H100``, an MI300X ``...-OAM``).
GPU_TYPES = {
    "nvidia-tesla-k80": "K80", "nvidia-tesla-p4": "P4", "nvidia-tesla-p100": "P100",
    "nvidia-tesla-v100": "V100", "nvidia-tesla-t4": "T4", "nvidia-a10g": "A10G",
    "nvidia-l4": "L4", "nvidia-tesla-a100": "A100", "nvidia-a100-80gb": "A100",
    "nvidia-tesla-h100": "H100", "nvidia-h100-80gb": "H100", "nvidia-h200-141gb": "H200",
    "nvidia-b200": "B200", "nvidia-gb200": "GB200", "nvidia-rtx-pro-6000": "RTX-PRO-6000",
    "nvidia-backwell-gb200": "GB200", "nvidia-backwell-b100": "B100",  # BentoML 1.4.16's
    "amd-mi300x": "AMD-Instinct-MI300X-OAM", "amd-mi325x": "AMD-Instinct-MI325X-OAM",
    "amd-mi355x": "AMD-Instinct-MI355X-OAM",
}  # fmt: skip

#: The generation in BentoML's ``resources.tpu_type`` (``v5e-2x2``), as Ray names it.
TPU_GENERATIONS = {"v4": "TPU-V4", "v5p": "TPU-V5P", "v5e": "TPU-V5LITEPOD", "v6e": "TPU-V6E"}


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
    accelerator = _accelerator_type(resources)
    if accelerator is not None:
        actor_options["accelerator_type"] = accelerator
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
    concurrency = (config.get("traffic") or {}).get("concurrency")
    if concurrency:
        # Applied only where the user's options turn autoscaling on (``_with_defaults``).
        options["autoscaling_config"] = {"target_ongoing_requests": concurrency}
    return options


def service_env_vars(
    service: Any, what: str, given: object, environ: Mapping[str, str] | None
) -> dict[str, str]:
    """The ``envs`` a service declares, for its replicas' runtime env.

    An entry without a value is BentoML's way to say "take it from the environment at
    deploy time": here from ``environ`` (the driver's, when ``deployment()`` runs), unless
    the user's own runtime_env ``env_vars`` (``given``) has it. With no ``environ`` (a
    Serve config being written) such entries are left for the cluster's builder.
    """
    env_vars: dict[str, str] = {}
    for env in service.envs:
        if getattr(env, "stage", "all") == "build":
            continue  # only for building the Bento's image
        if not env.value and environ is None:
            continue
        value = env.value or (environ or {}).get(env.name)  # BentoML's "no value" is ""
        if value is None and isinstance(given, dict) and env.name in given:
            continue  # the user's runtime_env gives it
        if value is None:
            raise InvalidDeploymentConfig(
                f"{what} declares the environment variable {env.name!r} without a value, "
                "so it is taken from the environment deployment() runs in, where it is "
                f"not set. Set {env.name} there, or give it in ray_actor_options' "
                "runtime_env env_vars."
            )
        env_vars[env.name] = str(value)
    return env_vars


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


def _accelerator_type(resources: dict[str, Any]) -> str | None:
    gpu_type, tpu_type = resources.get("gpu_type"), resources.get("tpu_type")
    if gpu_type is not None:
        if gpu_type not in GPU_TYPES:
            raise ValueError(
                f"resources.gpu_type {gpu_type!r} has no Ray accelerator type here; known "
                f"types: {', '.join(GPU_TYPES)}. Or give ray_actor_options' accelerator_type."
            )
        return GPU_TYPES[gpu_type]
    if tpu_type is not None:
        generation = str(tpu_type).split("-")[0]
        if generation not in TPU_GENERATIONS:
            raise ValueError(
                f"resources.tpu_type {tpu_type!r} has no Ray accelerator type here; known "
                f"generations: {', '.join(TPU_GENERATIONS)}. Or give ray_actor_options' "
                "accelerator_type."
            )
        return TPU_GENERATIONS[generation]
    return None


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
