"""The ingress deployment: BentoML's HTTP surface, runners reached over Ray handles or embedded."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.applications import Starlette

from ._bento_source import BentoSource
from ._http_app import build_http_app
from ._local_runner import LocalRunnerHandle
from ._replica_retry import CallTarget
from ._runner_handle import RayRunnerHandle


@serve.ingress()
class APIServerDeployment:
    """Loads the service once per replica and points each of its runners at its deployment.

    Ray Serve builds the ASGI app after the constructor, through ``__serve_build_asgi_app__``,
    and runs its lifespan, so the service's startup hooks run before the replica takes traffic.
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

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_http_app(self.svc, self.route_prefix)
