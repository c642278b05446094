"""``/metrics`` of a 1.2+ root service: this replica's Prometheus registry.

BentoML's app for a 1.2+ service reads its metrics in Prometheus' multiprocess mode, from
the directory ``bentoml serve`` sets up (``PROMETHEUS_MULTIPROC_DIR``) before any worker
imports ``prometheus_client``. A Ray replica has no such directory (Ray imported the
client long before), so BentoML's handler raised, and its timeout middleware held the
request for the whole ``traffic.timeout`` before Ray answered 500. Here, as for runner-based
services, ``/metrics`` is the replica's own registry: the service's metrics made with
``bentoml.metrics`` and the process figures. Ray Serve's request metrics are at Ray's
metrics export port.
"""

from __future__ import annotations

import prometheus_client
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


class ServeReplicaMetrics:
    """ASGI middleware: answers ``GET``/``HEAD`` at ``path`` with the replica's registry."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and (_route_path(scope) == self.path)
        ):
            body = prometheus_client.generate_latest()
            media_type = prometheus_client.CONTENT_TYPE_LATEST
            await Response(body, media_type=media_type)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path below the ``root_path`` Ray Serve's own route prefix sets, as Starlette routes."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path
