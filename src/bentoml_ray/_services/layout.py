"""A BentoML 1.2+ Bento as a Ray Serve application: one deployment per service.

Layout, for a root service ``Scorer`` that depends on ``Preprocessor``::

    Scorer         RootServiceDeployment        ingress: HTTP; calls Preprocessor over a handle
    Preprocessor   DependencyServiceDeployment  reached only over handles

Every service in the graph that ``bentoml.depends(on=...)`` reaches is deployed once, under
its own name, however many services depend on it; ``bentoml.depends(url=...)`` and
``deployment=...`` stay external and are called over HTTP by BentoML's client, as in
``bentoml serve``. Each deployment's options start from the service's own
``@bentoml.service`` settings (``service_options``); the user's options win.

Runs in the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from .._batching_plan import BatchingPlan
from .._bento.source import BentoSource
from .._errors import InvalidDeploymentConfig, did_you_mean
from .._layout import DeploymentSpec, Layout, deployment_name
from .._multiplexing import multiplexed_loaders
from .._options import (
    API_SERVER_OPTIONS,
    CALLEE_OPTIONS,
    check_deployment_options,
    check_mapping,
    check_max_retries,
    check_route_prefix,
)
from .._ray_compat import model_router_path
from .deployments import DependencyServiceDeployment, RootServiceDeployment
from .service_options import api_methods, deployment_defaults, service_env_vars


def service_deployment_name(service: str) -> str:
    """The deployment name of a 1.2+ service: the service's own name."""
    return service


def service_layout(
    source: BentoSource,
    root: Any,
    service_deployment_config: object,
    dependency_deployment_config: object,
    enable_batching: bool,
    batching_config: object,
    environ: Mapping[str, str] | None,
) -> Layout:
    """Check every option against the service graph; the deployments it then needs."""
    services = root.all_services(exclude_urls=True)
    dependencies = [name for name in services if name != root.name]
    root_what = f"the root service {root.name!r}"
    root_options = check_deployment_options(
        service_deployment_config,
        what=root_what,
        extra=API_SERVER_OPTIONS,
        argument="service_deployment_config",
    )
    route_prefix = check_route_prefix(root_options.pop("route_prefix", None))
    options_by_service = dict(
        check_mapping(dependency_deployment_config, "runner_deployment_config")
    )
    for name in options_by_service:
        if name == root.name:
            raise InvalidDeploymentConfig(
                f"runner_deployment_config names {name!r}, the root service; its options go "
                "in service_deployment_config (the second argument)."
            )
        if name not in dependencies:
            raise InvalidDeploymentConfig(
                f"runner_deployment_config names service {name!r}, which {source.display_name}"
                f" does not depend on.{did_you_mean(name, dependencies)} "
                f"Its dependency services: {', '.join(dependencies) or 'none'}."
            )
    plan = BatchingPlan.build(
        {name: api_methods(service) for name, service in services.items()},
        enable_batching,
        batching_config,
        kind="service",
    )

    specs: dict[str, DeploymentSpec] = {}  # in the order they are added: callees first

    def add(name: str) -> str:
        """Add ``name``'s deployment after those it calls, once; return its deployment name."""
        if name in specs:
            return specs[name].name
        service = services[name]
        calls = {
            dep.on.name: add(dep.on.name)
            for dep in service.dependencies.values()
            if dep.on is not None and not (dep.url or dep.deployment)  # external: HTTP
        }
        is_root = name == root.name
        what = root_what if is_root else f"service {name!r}"
        given = service_deployment_config if is_root else options_by_service.get(name)
        user_options = (
            root_options
            if is_root
            else check_deployment_options(given, what=what, extra=CALLEE_OPTIONS)
        )
        max_retries = check_max_retries(user_options.pop("max_retries", None), what)
        options = _with_defaults(service, what, user_options)
        if not is_root and "request_router_config" not in options:
            # Its callers' routers run in bentoml-ray's own replicas; a root's would run in
            # Ray's proxy, which may lack bentoml-ray, so the root keeps Ray's router.
            router = model_router_path() if multiplexed_loaders(service.inner) else None
            if router is not None:
                options["request_router_config"] = {"request_router_class": router}
        if "max_ongoing_requests" not in user_options:
            # Below the batch product a replica can never fill a batch (Ray warns).
            options["max_ongoing_requests"] = max(
                options["max_ongoing_requests"], plan.calls_to_fill(name) or 0
            )
        batching = plan.options_for(name)
        specs[name] = DeploymentSpec(
            name=deployment_name(options, service_deployment_name(name), what),
            what=what,
            cls=RootServiceDeployment if is_root else DependencyServiceDeployment,
            options=options,
            args=(name, batching, route_prefix) if is_root else (name, batching),
            calls=calls,
            max_retries=max_retries,
            env_vars=service_env_vars(service, what, _given_env_vars(options), environ),
            configured=cast("Mapping[str, Any] | None", given),  # checked above
        )
        return specs[name].name

    add(root.name)
    return Layout(source, str(root.name), tuple(specs.values()))


def _with_defaults(service: Any, what: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The service's own settings as options, under the user's (checked) options."""
    try:
        defaults = deployment_defaults(service)
    except ValueError as exc:
        raise InvalidDeploymentConfig(
            f"@bentoml.service settings of {what} cannot be read as Ray options: {exc}"
        ) from exc
    actor_options = {
        **defaults.pop("ray_actor_options", {}),
        **(options.get("ray_actor_options") or {}),
    }
    autoscaling = defaults.pop("autoscaling_config", {})  # applies where autoscaling is on
    merged = {**defaults, **options}
    if actor_options:
        merged["ray_actor_options"] = actor_options
    if "autoscaling_config" in options and "num_replicas" not in options:
        merged.pop("num_replicas", None)  # Ray refuses both; the user's autoscaling wins
    if isinstance(options.get("autoscaling_config"), dict):
        merged["autoscaling_config"] = {**autoscaling, **options["autoscaling_config"]}
    elif options.get("num_replicas") == "auto" and autoscaling:  # Ray's default autoscaling
        merged["autoscaling_config"] = dict(autoscaling)
    return merged


def _given_env_vars(options: Mapping[str, Any]) -> object:
    """The user's runtime_env ``env_vars`` in ``options`` (checked when it is merged)."""
    runtime_env = (options.get("ray_actor_options") or {}).get("runtime_env")
    return runtime_env.get("env_vars") if isinstance(runtime_env, dict) else None
