"""``/metrics``: this replica's Prometheus registry, for both kinds of service.

BentoML's app for a 1.2+ service reads its metrics in Prometheus' multiprocess mode, from
the directory ``bentoml serve`` sets up (``PROMETHEUS_MULTIPROC_DIR``) before any worker
imports ``prometheus_client``. A Ray replica has no such directory (Ray imported the
client long before), so BentoML's handler raised, and its timeout middleware held the
request for the whole ``traffic.timeout`` before Ray answered 500. So both kinds of
service answer ``/metrics`` from the replica's own registry (the runner-based app in its
route, a 1.2+ root through ``ServeReplicaMetrics``): the service's metrics made with
``bentoml.metrics`` and the process figures. Ray Serve's request metrics are at Ray's
metrics export port.
"""

from __future__ import annotations

import prometheus_client
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ._api_dispatch import route_path


class ServeReplicaMetrics:
    """ASGI middleware: answers ``GET``/``HEAD`` at ``path`` with the replica's registry."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and route_path(scope) == self.path
        ):
            await metrics_response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def metrics_response() -> Response:
    """This process's Prometheus registry, in Prometheus' text format."""
    return Response(
        prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )
