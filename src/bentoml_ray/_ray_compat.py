"""What differs between the Ray releases bentoml-ray supports (2.47 to the newest), in one place.

Where releases differ, the installed Ray's own signatures decide (the options its
``serve.deployment`` and ``serve.batch`` take), never its version number, and only public
APIs are used; where every supported release offers one form, that form is used on all of
them (the ingress below). Where a user asks for something the installed Ray lacks, the
error names the Ray release that brought it.

One Ray behaviour cannot be read from a signature: up to Ray 2.50 a replica keeps trying
to answer a caller that died for ``core_worker_rpc_server_reconnect_timeout_s`` (60 s),
and answers no one meanwhile; there the replicas get a shorter wait (``replica_env_vars``).

One combination is known not to work, and is refused before anything deploys
(``check_environment``): a Ray older than 2.57 with protobuf 7. Its Serve controller reads
configs with protobuf's ``FieldDescriptor.label``, which protobuf 7 removed. protobuf's
side is read from protobuf itself; Ray's only from its version, since the code that reads
``label`` is private to Ray.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp

from ._defaults import DEAD_CALLER_WAIT_S, MULTIPLEXED_REQUEST_ROUTER
from ._errors import UnsupportedEnvironment

#: Every keyword that the installed Ray's ``serve.deployment`` takes. ``route_prefix`` is
#: left out: the Rays that still list it (up to 2.55) refuse it at the deployment level.
RAY_DEPLOYMENT_OPTIONS: frozenset[str] = frozenset(
    name
    for name in inspect.signature(serve.deployment).parameters
    if not name.startswith("_") and name != "route_prefix"
)

#: Every keyword that the installed Ray's ``serve.batch`` takes.
RAY_BATCH_OPTIONS: frozenset[str] = frozenset(
    name for name in inspect.signature(serve.batch).parameters if not name.startswith("_")
)

#: What ``serve.batch`` does with the options left out. A Ray without
#: ``max_concurrent_batches`` (2.47) runs one batch at a time.
RAY_BATCH_DEFAULTS: dict[str, Any] = {
    "max_concurrent_batches": 1,
    **{
        name: param.default
        for name, param in inspect.signature(serve.batch).parameters.items()
        if param.default is not inspect.Parameter.empty
    },
}

#: Options of ``serve.deployment`` and ``serve.batch`` newer than Ray 2.47, and the first
#: Ray release that takes each (read from each release's signatures).
NEWER_RAY_OPTIONS: dict[str, str] = {
    "request_router_config": "2.48",
    "max_concurrent_batches": "2.48",
    "max_constructor_retry_count": "2.50",
    "batch_size_fn": "2.53",
    "placement_group_bundle_label_selector": "2.54",
    "deployment_actors": "2.55",
    "gang_scheduling_config": "2.55",
    "rolling_update_percentage": "2.56",
    "backpressure_config": "2.58",
    "max_surge_percent": "2.60",
}


#: Whether a ``DeploymentHandle`` call can carry a session id for Ray's routers.
HANDLE_TAKES_SESSION_ID: bool = (
    "session_id" in inspect.signature(DeploymentHandle.options).parameters
)


def handle_routing_options(model_id: str, session_id: str) -> dict[str, str]:
    """``DeploymentHandle.options`` keywords for a call's model id and session id.

    A Ray whose handles take no session id routes the call without it.
    """
    options = {"multiplexed_model_id": model_id} if model_id else {}
    if session_id and HANDLE_TAKES_SESSION_ID:
        options["session_id"] = session_id
    return options


def model_router_path() -> str | None:
    """Where ``ModelAffinityRouter`` is, if this Ray takes request routers (2.48+), or None.

    Decided by what the installed Ray has: the ``request_router_config`` option and the
    public router classes ``_replica.model_router`` builds on.
    """
    if "request_router_config" not in RAY_DEPLOYMENT_OPTIONS:
        return None
    try:
        from ray.serve.request_router import RunningReplica

        from ._replica import model_router  # noqa: F401  (its names are in this Ray)
    except ImportError:
        return None
    if not hasattr(RunningReplica, "multiplexed_model_ids"):
        return None
    return MULTIPLEXED_REQUEST_ROUTER


def ray_version() -> str:
    import ray

    return str(ray.__version__)


#: The first Ray release whose Serve controller works with protobuf 7.
RAY_WITH_PROTOBUF_7 = (2, 57)


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


#: The first Ray release without ``core_worker_rpc_server_reconnect_timeout_s``: its
#: replicas fail their calls to a worker that died at once (read from each release).
RAY_FAILS_CALLS_TO_DEAD_WORKERS = (2, 51)


def replica_env_vars(ray: str | None = None) -> dict[str, str]:
    """Environment variables every replica gets, under the Bento's and the user's own.

    On a Ray older than 2.51, ``DEAD_CALLER_WAIT_S`` for Ray's wait on a caller that died
    (``_defaults``); read when the replica's worker starts, so it reaches no other process.
    """
    ray = ray_version() if ray is None else ray
    if _release(ray) < RAY_FAILS_CALLS_TO_DEAD_WORKERS:
        return {"RAY_core_worker_rpc_server_reconnect_timeout_s": str(DEAD_CALLER_WAIT_S)}
    return {}


def protobuf_has_field_label() -> bool:
    """Whether protobuf's ``FieldDescriptor`` still has ``label`` (protobuf 6 and older)."""
    from google.protobuf.descriptor import FieldDescriptor

    return hasattr(FieldDescriptor, "label")


def environment_problem(
    ray: str | None = None, protobuf_has_label: bool | None = None
) -> str | None:
    """What is known not to work in this environment, and what to install; None if nothing.

    ``ray`` (a version) and ``protobuf_has_label`` default to the installed ones.
    """
    ray = ray_version() if ray is None else ray
    if protobuf_has_label is None:
        protobuf_has_label = protobuf_has_field_label()
    if not protobuf_has_label and _release(ray) < RAY_WITH_PROTOBUF_7:
        return (
            f"Ray {ray}'s Serve controller fails with protobuf 7, which removed the "
            "FieldDescriptor.label it reads: pip install 'protobuf<7' (or Ray 2.57.1 or newer)."
        )
    return None


def check_environment() -> None:
    """Raise ``UnsupportedEnvironment`` where Ray Serve is known not to work here."""
    problem = environment_problem()
    if problem is not None:
        raise UnsupportedEnvironment(problem)


def newer_ray_hint(option: str) -> str:
    """For an option this Ray does not take: the release that brought it, if one did."""
    since = NEWER_RAY_OPTIONS.get(option)
    if since is None:
        return ""
    return f" {option!r} needs Ray {since} or newer; the installed Ray is {ray_version()}."


class BuildsASGIApp(Protocol):
    def build_asgi_app(self) -> ASGIApp: ...


IngressClass = TypeVar("IngressClass", bound=type[Any])

#: The app an ingress constructor just built, until Ray's builder call takes it: Ray makes
#: that call right after the constructor, in the same thread.
_built = threading.local()


def _keep_app_of_this_replica(app: ASGIApp) -> None:
    _built.app = app


def _app_of_this_replica() -> ASGIApp:
    app: ASGIApp | None = getattr(_built, "app", None)
    if app is None:
        raise RuntimeError("The ingress replica built no ASGI app in its constructor.")
    _built.app = None
    return app


def replica_built_ingress(cls: IngressClass) -> IngressClass:
    """``serve.ingress`` for a class whose every replica builds its own ASGI app.

    Its app depends on what the constructor loaded (the service, its runners), so it cannot
    exist in the driver. Every supported Ray takes a builder function that each replica
    calls, without arguments, right after the class's constructor (Ray 2.47 onwards; the
    no-argument ``serve.ingress()`` with ``__serve_build_asgi_app__`` came in 2.56). The
    constructor therefore ends by building the app (``build_asgi_app``) and leaving it
    where the builder takes it.
    """
    constructor: Callable[..., None] = cls.__init__

    def __init__(self: BuildsASGIApp, *args: Any, **kwargs: Any) -> None:
        constructor(self, *args, **kwargs)
        # Through a module-level function: Ray 2.47 pickles this class by value, and a
        # global assigned here would land in the pickle's copy of this module's namespace.
        _keep_app_of_this_replica(self.build_asgi_app())

    cls.__init__ = __init__  # type: ignore[misc]
    return serve.ingress(_app_of_this_replica)(cls)  # type: ignore[no-any-return]
