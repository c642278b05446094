"""A runner-based ("legacy") Bento as a Ray Serve application.

Layout, for a service ``S`` with runners ``r1``, ``r2``::

    S                  APIServerDeployment   ingress: HTTP, IO descriptors, API functions
    S.runner.r1        RunnerDeployment      runner r1's model, serve.batch if planned
    S.runner.r2        RunnerDeployment

The API server receives one ``DeploymentHandle`` per runner (in a ``CallTarget``, with
the runner's retry budget); a runner call is one handle call. An *embedded* runner
(``Runner(embedded=True)`` in the Bento, or ``embedded: true`` in its options) has no
deployment: its model runs inside each API-server replica, which saves the hop and is
what small CPU models want; it then scales with the API server.

Runs in the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from .._batching_plan import BatchingPlan, MethodInfo
from .._bento.source import BentoSource
from .._defaults import MAX_ONGOING_REQUESTS
from .._errors import BentoRayError, InvalidDeploymentConfig, did_you_mean
from .._layout import DeploymentSpec, Layout, deployment_name
from .._multiplexing import multiplexed_loaders
from .._options import (
    API_SERVER_OPTIONS,
    RUNNER_OPTIONS,
    check_deployment_options,
    check_embedded,
    check_mapping,
    check_max_retries,
    check_placement,
    check_route_prefix,
)
from .api_server import APIServerDeployment, EmbeddedRunner
from .runner_deployment import RunnerDeployment


def api_server_deployment_name(service: str) -> str:
    return service


def runner_deployment_name(service: str, runner: str) -> str:
    return f"{service}.runner.{runner}"


def runner_layout(
    source: BentoSource,
    svc: Any,
    service_deployment_config: object,
    runner_deployment_config: object,
    enable_batching: bool,
    batching_config: object,
) -> Layout:
    """Check every option against the loaded service; the deployments it then needs."""
    refuse_multiplexed_runnables(svc.runners)
    api_what = f"the API-server deployment of {svc.name!r}"
    api_options = check_deployment_options(
        service_deployment_config,
        what=api_what,
        extra=API_SERVER_OPTIONS,
        argument="service_deployment_config",
    )
    route_prefix = check_route_prefix(api_options.pop("route_prefix", None))
    api_options.setdefault("max_ongoing_requests", MAX_ONGOING_REQUESTS)

    runner_names = [runner.name for runner in svc.runners]
    runner_options = check_mapping(runner_deployment_config, "runner_deployment_config")
    for name in runner_options:
        if name not in runner_names:
            raise InvalidDeploymentConfig(
                f"runner_deployment_config names runner {name!r}, which {source.display_name} "
                f"does not have.{did_you_mean(name, runner_names)} "
                f"Runners: {', '.join(runner_names) or 'none'}."
            )
    plan = BatchingPlan.build(
        {
            runner.name: {
                method.name: MethodInfo(batchable=method.config.batchable)
                for method in runner.runner_methods
            }
            for runner in svc.runners
        },
        enable_batching,
        batching_config,
    )

    specs: list[DeploymentSpec] = []
    calls: dict[str, str] = {}  # runner -> its deployment's name
    embedded: dict[str, EmbeddedRunner] = {}
    for runner in svc.runners:
        what = f"runner {runner.name!r}"
        given = runner_options.get(runner.name)
        options = check_deployment_options(given, what=what, extra=RUNNER_OPTIONS)
        placement = check_placement(options.pop("placement", None), what)
        if check_embedded(options.pop("embedded", None), bool(runner.embedded), what):
            if options:
                raise InvalidDeploymentConfig(
                    f"{what} is embedded: it runs inside the API server's replicas and has "
                    f"no deployment of its own, so {', '.join(map(repr, sorted(options)))} "
                    "cannot apply to it. Give these options to the API server "
                    "(service_deployment_config), or set embedded: false."
                )
            embedded[runner.name] = (plan.options_for(runner.name), placement)
            continue
        max_retries = check_max_retries(options.pop("max_retries", None), what)
        options.setdefault(
            "max_ongoing_requests",
            max(MAX_ONGOING_REQUESTS, plan.calls_to_fill(runner.name) or 0),
        )
        calls[runner.name] = deployment_name(
            options, runner_deployment_name(svc.name, runner.name), what
        )
        specs.append(
            DeploymentSpec(
                name=calls[runner.name],
                what=what,
                cls=RunnerDeployment,
                options=options,
                args=(runner.name, plan.options_for(runner.name), placement),
                max_retries=max_retries,
                configured=given,
            )
        )
    api_name = deployment_name(api_options, api_server_deployment_name(svc.name), api_what)
    specs.append(
        DeploymentSpec(
            name=api_name,
            what=api_what,
            cls=APIServerDeployment,
            options=api_options,
            args=(embedded, route_prefix),
            calls=calls,
            configured=cast("Mapping[str, Any] | None", service_deployment_config),  # checked
        )
    )
    return Layout(source, str(svc.name), tuple(specs))


def refuse_multiplexed_runnables(runners: list[Any]) -> None:
    """A runnable's methods are not awaited on the replica's loop, so no loader can work.

    A runner's method reads the model id with ``bentoml_ray.model_id()`` instead (each
    runner call carries its request's id) and keeps its models itself.
    """
    for runner in runners:
        loaders = multiplexed_loaders(runner.runnable_class)
        if loaders:
            raise BentoRayError(
                f"Runner {runner.name!r}'s runnable has a @bentoml_ray.multiplexed loader "
                f"({', '.join(loaders)}); loaders work on BentoML 1.2+ services only. In a "
                "runnable, read the request's model with bentoml_ray.model_id() in the "
                "method and keep the loaded models yourself (a dict, or functools.lru_cache)."
            )
