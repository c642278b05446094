"""The public HTTP ingress of a Bento: one builder for both kinds of service.

Outermost first, every request meets:

1. ``IngressFrame``, one frame for three jobs: BentoML's request metrics (unless the
   service turns them off), the service's traffic timeout (BentoML's 504 when it passes)
   and the plain 500 for an error nothing answered;
2. ``PublicGate``: the guards, in this order (no pickle from clients, the body size cap,
   ``/metrics``), then, for an API request that no guard acts on, its endpoint directly
   when the service has no middleware of its own (the service's per-request context
   entered around it);
3. the service's own app (its routes, its middlewares, its lifespan), mounted at the route
   prefix.

``route_prefix`` means one thing: the path the service's routes are served under. It is
applied here, by the mount, because ``serve run module:app`` always deploys an
application at ``/``; the CLI and Serve configs give it to Serve instead (Serve routes
between the applications of one cluster by it), and then it is ``/`` here.

Ray Serve gets a Starlette app whose routes reach the service's through the mount, so it
names each request's route (its metrics' ``route`` label) as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from .._replica.hub_link import HubLink
from .body_limit import LimitRequestBody, max_body_size
from .frame import IngressFrame, PublicApp
from .gate import PublicGate, RequestContext, direct_routes, routes_direct_first
from .guard import ErrorBody, Guard
from .lifespan import asgi_lifespan
from .media_types import RefuseInternalMediaTypes
from .metrics import ReplicaMetrics
from .request_metrics import RequestMetricsSpec


def public_ingress(
    service_app: Starlette,
    *,
    route_prefix: str,
    timeout: float | None,
    error_body: ErrorBody,
    is_api: Callable[[BaseRoute], bool],
    direct: bool,
    request_context: RequestContext | None = None,
    endpoint_for: Callable[[Route], ASGIApp | None] | None = None,
    metrics: RequestMetricsSpec | None = None,
    hub: HubLink | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """``service_app`` behind the timeout and the guards, served at ``route_prefix``.

    ``is_api`` tells the service's API routes from its other routes; ``direct`` says
    whether they may skip ``service_app`` (only when nothing in it must see every API
    request: no middleware of the service's own). Before it first runs, ``service_app``'s
    unambiguous API routes are moved to the front of its routes (``routes_direct_first``),
    where Ray Serve finds each request's route name sooner. ``endpoint_for`` gives a direct
    route's planned endpoint (a 1.2+ API's), if it has one. ``metrics`` names BentoML's
    request metrics (None: not kept); ``hub`` is the replica's link to the application's
    hub, through which ``/metrics`` answers for every replica (None: for this one).
    ``ready`` is awaited after the service's startup, before the replica takes traffic
    (in a rollout: until its callees of the same version loaded).
    """
    prefix = route_prefix.rstrip("/")
    guards: list[Guard] = [
        RefuseInternalMediaTypes(error_body),
        LimitRequestBody(max_body_size(), error_body),
        ReplicaMetrics(f"{prefix}/metrics", hub),
    ]
    routes = service_app.router.routes
    unambiguous = direct_routes(routes, is_api, prefix)
    routes[:] = routes_direct_first(routes, unambiguous)  # found first by Ray, either way

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan does not run by itself: the service's, run through its
        # own middlewares, as when it is the app.
        async with asgi_lifespan(service_app):
            if ready is not None:
                await ready()
            yield

    gate = Middleware(
        PublicGate,
        guards=guards,
        service=service_app,
        prefix=prefix,
        direct=unambiguous if direct else {},
        request_context=request_context,
        endpoint_for=endpoint_for,
    )
    frame = Middleware(
        IngressFrame, timeout=timeout, metrics=metrics, metrics_path=f"{prefix}/metrics"
    )
    return PublicApp(
        routes=[Mount(prefix, app=service_app)],
        middleware=[frame, gate],
        lifespan=lifespan,
    )
