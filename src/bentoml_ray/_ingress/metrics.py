"""``/metrics``: the application's metrics, every replica's, for both kinds of service.

BentoML's app for a 1.2+ service reads its metrics in Prometheus' multiprocess mode, from
the directory ``bentoml serve`` sets up (``PROMETHEUS_MULTIPROC_DIR``) before any worker
imports ``prometheus_client``. A Ray replica has no such directory (Ray imported the
client long before), so BentoML's handler raised, and its timeout middleware held the
request for the whole ``traffic.timeout`` before Ray answered 500. So the public ingress
answers ``/metrics`` itself, for both kinds of service, from the replica's own registry:
BentoML's request metrics, the service's metrics made with ``bentoml.metrics`` and the
process figures. Through the replica's hub link it answers for every replica of the
application, merged as ``bentoml serve`` merges its workers' (``_hub.exposition``);
without one (an app served outside Ray), for this replica alone.
"""

from __future__ import annotations

import logging

import prometheus_client
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .._replica.hub_link import HubLink
from .guard import RequestHead, route_path

logger = logging.getLogger("bentoml_ray")

#: The answer when the hub cannot be reached: one replica's metrics would pass for all.
_NO_HUB = "The application's hub is unavailable; its metrics cannot be merged now.\n"


class ReplicaMetrics:
    """Guard: answers ``GET``/``HEAD`` at ``path`` with the application's metrics.

    Other methods go on to the service, as past ``bentoml serve``'s own ``GET`` route:
    an API the service declares at the same path takes them.
    """

    def __init__(self, path: str, hub: HubLink | None = None) -> None:
        self.path = path
        self.hub = hub

    def acts_on(self, scope: Scope, head: RequestHead) -> bool:
        return scope["method"] in ("GET", "HEAD") and route_path(scope) == self.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        if self.hub is None:
            text = prometheus_client.generate_latest()
        else:
            try:
                text = await self.hub.scrape()
            except Exception as exc:  # the hub gone past its retries: say so, not a part
                logger.warning("/metrics could not reach the application's hub: %s", exc)
                await PlainTextResponse(_NO_HUB, status_code=503)(scope, receive, send)
                return
        response = Response(text, media_type=prometheus_client.CONTENT_TYPE_LATEST)
        await response(scope, receive, send)
