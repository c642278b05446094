"""The deployments of one application, as data, and the one function that declares and binds them.

Each kind of Bento has a builder that checks the user's options against the loaded service
and returns a ``Layout`` (``_runners.layout``, ``_services.layout``): the deployments it
wants, each with its name, class (its role), options, bind arguments, the deployments it calls
and the retry budget of calls to it. ``Layout.bind`` turns that into the Ray Serve
application; the Serve config export reads the same list (``configured_deployments``).
Every deployment class takes ``(source, calls, hub, *args)``: ``calls`` maps the name the
replica knows a callee by (a runner's or a service's) to its handle, with its budget and
the version its calls carry; ``hub`` is the handle of the application's hub (``_hub``), one
more deployment that every application has, named ``<service>.hub``. A callee also takes
``rollout=``: the ingress it waits for in a rollout (``_replica.versions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from ray.serve import Application

from ._bento.runtime_env import merge_runtime_env
from ._bento.source import BentoSource
from ._defaults import HUB_OPTIONS, MAX_RETRIES, MAX_SURGE_PERCENT
from ._errors import InvalidArgument
from ._hub.deployment import HubDeployment, hub_deployment_name
from ._ray_compat import RAY_DEPLOYMENT_OPTIONS, replica_env_vars
from ._replica.calls import CallTarget, bound_target
from ._replica.versions import CalleeRollout, IngressRollout

#: The per-deployment options a Serve config's ``deployments:`` shows, for operators to change.
SCALING_OPTIONS = ("num_replicas", "autoscaling_config", "max_ongoing_requests")


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of the application, before Ray sees it; its class says its role."""

    name: str
    #: How messages name it ("runner 'iris_clf'").
    what: str
    cls: type
    #: ``serve.deployment`` options, checked and with bentoml-ray's defaults, ``name`` aside.
    options: Mapping[str, Any]
    #: Bind arguments after the source and the calls.
    args: tuple[Any, ...] = ()
    #: Callee as the replica knows it (runner or service name) -> its deployment's name.
    calls: Mapping[str, str] = field(default_factory=dict)
    #: How often a call *to* this deployment is sent again when its replica dies.
    max_retries: int = MAX_RETRIES
    #: Environment the service itself declares, under the user's runtime_env.
    env_vars: Mapping[str, str] = field(default_factory=dict)
    #: The options the user gave for it, if any (what a Serve config lists).
    configured: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Layout:
    """A Bento's deployments, callees before their callers, the HTTP ingress last."""

    source: BentoSource
    #: The root service's name: the application's default name.
    service_name: str
    specs: tuple[DeploymentSpec, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {self.hub_name: "the application's hub"}
        for spec in self.specs:
            if spec.name in seen:
                raise InvalidArgument(
                    f"{spec.what} and {seen[spec.name]} would both be named {spec.name!r}; "
                    "names must be unique."
                )
            seen[spec.name] = spec.what

    @property
    def ingress(self) -> DeploymentSpec:
        return self.specs[-1]

    @property
    def hub_name(self) -> str:
        return hub_deployment_name(self.service_name)

    def bind(self) -> Application:
        """Declare every deployment with Ray (which checks its options) and bind the graph.

        Every deployment is bound with the source, its callees' handles (stamped with the
        Bento's version) and the hub's handle (``_hub``: the application's metrics and task
        results), then its own args; a callee whose old replicas outlive its new ones'
        start (``max_surge_percent``) waits for the ingress's rollout before taking calls.
        A caller and callee both at zero replicas start side by side (``CallTarget.wake``).
        """
        by_name = {spec.name: spec for spec in self.specs}
        hub = bound_target(self._declare_hub().bind(), MAX_RETRIES)
        version = self.source.version
        callees = tuple(spec.name for spec in self.specs[:-1])
        bound: dict[str, Application] = {}
        for spec in self.specs:
            from_zero = _may_scale_to_zero(spec.options)
            calls: dict[str, CallTarget] = {}
            for key, name in spec.calls.items():
                at_zero = _may_scale_to_zero(by_name[name].options)
                retries = by_name[name].max_retries
                calls[key] = bound_target(
                    bound[name], retries, version, at_zero, wake=at_zero and from_zero
                )
            extra: dict[str, Any] = {"rollout": CalleeRollout(callees)}
            if spec is not self.ingress:
                surges = bool(_rollout_options(spec.options).get("max_surge_percent"))
                extra["rollout"] = IngressRollout(self.ingress.name) if surges else None
            bound[spec.name] = self._declare(spec).bind(
                self.source, calls, hub, *spec.args, **extra
            )
        return bound[self.ingress.name]

    def configured_deployments(self) -> list[dict[str, Any]]:
        """``deployments:`` entries of a Serve config: those the user configured, ingress first."""
        ordered = [self.ingress, *self.specs[:-1]]
        return [
            {
                "name": spec.name,
                **{key: spec.configured[key] for key in SCALING_OPTIONS if key in spec.configured},
            }
            for spec in ordered
            if spec.configured is not None
        ]

    def _declare_hub(self) -> Any:
        """``serve.deployment(HubDeployment, ...)``, with what this Ray's replicas need."""
        options = dict(HUB_OPTIONS)
        env_vars = replica_env_vars()
        if env_vars:
            actor_options = {**options["ray_actor_options"], "runtime_env": {"env_vars": env_vars}}
            options["ray_actor_options"] = actor_options
        return serve.deployment(name=self.hub_name, **options)(HubDeployment)

    def _declare(self, spec: DeploymentSpec) -> Any:
        """``serve.deployment(spec.cls, ...)`` with the Bento's environment merged in.

        The Bento's runtime_env (its bentofile's env vars, and its requirements when they
        are to be installed) and the service's own env vars go under the user's own
        ``runtime_env``: the user's values win, and fields that cannot be merged raise.
        Under them all, what this Ray's replicas need (``_ray_compat.replica_env_vars``).
        (The Bento itself reaches the nodes apart from it: ``_bento.shipping``.)
        """
        options = _rollout_options(spec.options)
        actor_options = dict(options.get("ray_actor_options") or {})
        derived = dict(self.source.runtime_env)
        env_vars = {**replica_env_vars(), **(derived.get("env_vars") or {})}
        if env_vars:
            derived["env_vars"] = env_vars
        runtime_env = merge_runtime_env(
            derived, actor_options.get("runtime_env"), spec.what, spec.env_vars
        )
        if runtime_env:
            actor_options["runtime_env"] = runtime_env
        options["ray_actor_options"] = actor_options
        try:
            return serve.deployment(name=spec.name, **options)(spec.cls)
        except Exception as exc:  # Ray raises TypeError, ValueError or pydantic's errors
            raise InvalidArgument(f"Ray rejects the options of {spec.what}: {exc}") from exc


def _may_scale_to_zero(options: Mapping[str, Any]) -> bool:
    """Whether a deployment of ``options`` may run no replica (``min_replicas: 0``)."""
    config = options.get("autoscaling_config")  # a dict, or Ray's AutoscalingConfig
    minimum = (
        config.get("min_replicas", 1)
        if isinstance(config, Mapping)
        else getattr(config, "min_replicas", 1)
    )
    return bool(minimum == 0)


def _rollout_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with bentoml-ray's surge, where this Ray takes one and the user gave none."""
    options = dict(options)
    if "max_surge_percent" in RAY_DEPLOYMENT_OPTIONS:
        options.setdefault("max_surge_percent", MAX_SURGE_PERCENT)
    return options


def deployment_name(options: dict[str, Any], default: str, what: str) -> str:
    """The name the user gave in ``options`` (taken out of them), else ``default``."""
    name = options.pop("name", default)
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"name of {what} must be a non-empty string, not {name!r}.")
    return name
