"""The ingress deployment: BentoML's HTTP surface, runners reached over Ray handles or embedded."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from ._bento_source import BentoSource
from ._http_app import build_http_app
from ._local_runner import LocalRunnerHandle
from ._ray_compat import replica_built_ingress
from ._replica_retry import CallTarget
from ._runner_handle import RayRunnerHandle


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
        embedded: dict[str, dict[str, dict[str, Any]]],
        route_prefix: str,
    ) -> None:
        self.svc: Any = source.load()
        # ``bentoml serve`` runs these once, before its workers; on Ray, once per replica.
        for hook in self.svc.deployment_hooks:
            hook()
        self.route_prefix = route_prefix
        for runner in self.svc.runners:
            if runner.name in embedded:  # its model, and its batching, live in this replica
                runner.init_client(LocalRunnerHandle, embedded[runner.name])
            else:
                runner.init_client(RayRunnerHandle, runners[runner.name])

    def build_asgi_app(self) -> Starlette:
        return build_http_app(self.svc, self.route_prefix)
