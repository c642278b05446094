"""``deployment()``: from a Bento to a Ray Serve application, every check done first.

Layout, for a service ``S`` with runners ``r1``, ``r2``::

    S                  APIServerDeployment   ingress: HTTP, IO descriptors, API functions
    S.runner.r1        RunnerDeployment      runner r1's model, serve.batch if planned
    S.runner.r2        RunnerDeployment

The API server receives one ``DeploymentHandle`` per runner; a runner call is one handle
call. Nothing here needs a running Ray: the result is an unbuilt ``Application`` that
``serve.run`` or ``serve run module:attr`` deploys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application, Deployment

from ._api_server import APIServerDeployment
from ._batching import BatchingPlan, RunnerMethodInfo
from ._bento_source import BentoSource, resolve_target
from ._bentoml_internals import LegacyService
from ._errors import InvalidDeploymentConfig
from ._options import (
    API_SERVER_OPTIONS,
    check_deployment_options,
    check_mapping,
    check_route_prefix,
    did_you_mean,
)
from ._runner_deployment import RunnerDeployment

#: Ray's default (5) would make the API server, which mostly awaits runners, queue at the
#: proxy under any real load; BentoML's own API server sets no limit at all.
API_SERVER_MAX_ONGOING_REQUESTS = 100
#: A runner replica queues calls to its model itself (one at a time per replica, as in
#: BentoML), so Ray's default of 5 only adds router backoff: at 32 connections it halved
#: the iris example's requests/s. Batching may need more to fill its batches.
RUNNER_MAX_ONGOING_REQUESTS = 100


def api_server_deployment_name(service: str) -> str:
    return service


def runner_deployment_name(service: str, runner: str) -> str:
    return f"{service}.runner.{runner}"


def deployment(
    target: Any,
    service_deployment_config: Mapping[str, Any] | None = None,
    runner_deployment_config: Mapping[str, Mapping[str, Any]] | None = None,
    enable_batching: bool = False,
    batching_config: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    *,
    runners_deployment_config_map: Mapping[str, Mapping[str, Any]] | None = None,
) -> Application:
    """Turn a Bento into a Ray Serve application: one API-server deployment, one per runner.

    Args:
        target: a Bento tag (``str`` or ``bentoml.Tag``), a ``bentoml.Bento``, or a loaded
            ``bentoml.legacy.Service``.
        service_deployment_config: ``serve.deployment`` options for the API server, plus
            ``route_prefix`` (the HTTP path the whole service is served under).
        runner_deployment_config: runner name -> ``serve.deployment`` options for it.
        enable_batching: serve every batchable runner method through ``serve.batch``.
        batching_config: runner name -> method name -> ``serve.batch`` options.
        runners_deployment_config_map: BentoML 1.4's name for ``runner_deployment_config``.

    Returns:
        An application for ``serve.run(app)`` or ``serve run module:attr``.

    Raises:
        InvalidDeploymentConfig: an option, runner, method or value that is not allowed;
            the message names it and what is allowed.
        BentoNotFound: the tag is not in the BentoML store.
    """
    if runners_deployment_config_map is not None:
        if runner_deployment_config is not None:
            raise InvalidDeploymentConfig(
                "Give runner options once: runner_deployment_config or its older name "
                "runners_deployment_config_map, not both."
            )
        runner_deployment_config = runners_deployment_config_map
    source, svc = resolve_target(target)
    if not isinstance(svc, LegacyService):
        raise InvalidDeploymentConfig(
            f"{source.display_name} is a BentoML 1.2+ service ({type(svc).__name__}); this "
            "version of bentoml-ray serves runner-based (bentoml.legacy.Service) Bentos."
        )
    return build_application(
        source,
        svc,
        service_deployment_config,
        runner_deployment_config,
        enable_batching,
        batching_config,
    )


def build_application(
    source: BentoSource,
    svc: Any,
    service_deployment_config: object,
    runner_deployment_config: object,
    enable_batching: bool,
    batching_config: object,
) -> Application:
    """Check every option against the loaded service, then declare and bind the deployments."""
    api_what = f"the API-server deployment of {svc.name!r}"
    api_options = check_deployment_options(
        service_deployment_config, what=api_what, extra=API_SERVER_OPTIONS
    )
    route_prefix = check_route_prefix(api_options.pop("route_prefix", None))
    api_options.setdefault("max_ongoing_requests", API_SERVER_MAX_ONGOING_REQUESTS)

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
                method.name: RunnerMethodInfo(
                    batchable=method.config.batchable,
                    batch_dim=tuple(method.config.batch_dim),
                )
                for method in runner.runner_methods
            }
            for runner in svc.runners
        },
        enable_batching,
        batching_config,
    )

    declared: dict[str, str] = {}
    handles: dict[str, Application] = {}
    for runner in svc.runners:
        what = f"runner {runner.name!r}"
        options = check_deployment_options(runner_options.get(runner.name), what=what)
        options.setdefault(
            "max_ongoing_requests",
            max(RUNNER_MAX_ONGOING_REQUESTS, plan.calls_to_fill(runner.name) or 0),
        )
        runner_deployment = _declare(
            RunnerDeployment,
            runner_deployment_name(svc.name, runner.name),
            options,
            source,
            what,
            declared,
        )
        handles[runner.name] = runner_deployment.bind(
            source, runner.name, plan.for_runner(runner.name)
        )
    api_server = _declare(
        APIServerDeployment,
        api_server_deployment_name(svc.name),
        api_options,
        source,
        api_what,
        declared,
    )
    return api_server.bind(source, handles, route_prefix)


def _declare(
    cls: type,
    default_name: str,
    options: dict[str, Any],
    source: BentoSource,
    what: str,
    declared: dict[str, str],
) -> Deployment:
    """``serve.deployment(cls, ...)`` with the Bento's environment and Ray's own checks."""
    options = dict(options)
    name = options.pop("name", default_name)
    if not isinstance(name, str) or not name:
        raise InvalidDeploymentConfig(f"name of {what} must be a non-empty string, not {name!r}.")
    if name in declared:
        raise InvalidDeploymentConfig(
            f"{what} and {declared[name]} would both be named {name!r}; names must be unique."
        )
    declared[name] = what

    actor_options = dict(options.get("ray_actor_options") or {})
    runtime_env = dict(actor_options.get("runtime_env") or {})
    runtime_env["env_vars"] = {**source.env_vars, **(runtime_env.get("env_vars") or {})}
    actor_options["runtime_env"] = runtime_env
    options["ray_actor_options"] = actor_options
    try:
        return serve.deployment(name=name, **options)(cls)
    except Exception as exc:  # Ray raises TypeError, ValueError or pydantic's errors
        raise InvalidDeploymentConfig(f"Ray rejects the options of {what}: {exc}") from exc
