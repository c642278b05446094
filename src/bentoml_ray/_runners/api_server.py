"""The ingress deployment of a runner-based Bento: HTTP APIs; runners over handles or embedded."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette

from .._bento.source import BentoSource
from .._bentoml_internals import api_server_timeout
from .._ingress.app import public_ingress
from .._ingress.request_metrics import request_metrics_spec
from .._ray_compat import replica_built_ingress
from .._replica.calls import CallTarget, wake_callees
from .._replica.hub_link import HubLink
from .._replica.versions import CalleeRollout, ingress_ready
from .call_placement import Placement
from .http_app import error_body, is_api_route, service_app
from .local_runner import LocalRunnerHandle
from .runner_handle import RayRunnerHandle
from .service import load_service

#: An embedded runner's batching options (per method) and the placement of its calls.
EmbeddedRunner = tuple[dict[str, dict[str, Any]], Placement]


@replica_built_ingress
class APIServerDeployment:
    """Loads the service once per replica and points each of its runners at its deployment.

    The replica builds its ASGI app once the constructor is done (``build_asgi_app``), and
    Ray Serve runs its lifespan, so the service's startup hooks run before it takes traffic.
    """

    def __init__(
        self,
        source: BentoSource,
        runners: dict[str, CallTarget],
        hub: CallTarget | None,
        embedded: dict[str, EmbeddedRunner],
        route_prefix: str,
        rollout: CalleeRollout | None = None,
    ) -> None:
        wake_callees(runners.values())  # before the service loads
        self.hub = HubLink(hub) if hub is not None else None  # None: served outside Ray
        self.version = source.version
        self.rollout = rollout
        self.svc: Any = load_service(source)
        self.route_prefix = route_prefix
        for runner in self.svc.runners:
            if runner.name in embedded:  # its model, and its batching, live in this replica
                runner.init_client(LocalRunnerHandle, *embedded[runner.name])
            else:
                runner.init_client(RayRunnerHandle, runners[runner.name])

    def build_asgi_app(self) -> Starlette:
        ready = functools.partial(ingress_ready, self.rollout, self.hub, self.version)
        return runner_ingress(self.svc, self.route_prefix, self.hub, ready)


def runner_ingress(
    svc: Any,
    route_prefix: str,
    hub: HubLink | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The public ingress of a loaded runner-based service (its runners' clients set)."""
    app = service_app(svc)
    tag = svc.tag
    return public_ingress(
        app,
        route_prefix=route_prefix,
        # ``bentoml serve`` bounds each request by ``api_server.traffic.timeout``.
        timeout=api_server_timeout(),
        error_body=error_body,
        is_api=is_api_route,
        direct=not app.user_middleware,  # the service's middlewares, and CORS
        metrics=request_metrics_spec(tag.name if tag else svc.name, tag.version if tag else None),
        hub=hub,
        ready=ready,
    )
