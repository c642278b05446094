"""What a 1.2+ root's HTTP app gets in front of it: no pickle from clients
(``_media_type_guard``), a cap on body size (``_body_limit``), ``/metrics``
(``_replica_metrics``), and a path prefix."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount

from ._api_dispatch import APIDispatch
from ._body_limit import ErrorBody, LimitRequestBody, max_body_size
from ._media_type_guard import RefuseInternalMediaTypes
from ._replica_metrics import ServeReplicaMetrics


def public_app(app: Starlette, route_prefix: str, error_body: ErrorBody) -> Starlette:
    """``app`` behind the media-type guard and the body cap, served under ``route_prefix``.

    The guards are added to ``app`` itself (before it first runs), so that Ray Serve still
    gets a Starlette app: Ray names each request's route (its metrics' ``route`` label)
    from a Starlette app's routes only. They go in front of the app's own middlewares,
    except an ``APIDispatch`` and what stands before it (the traffic timeout), which stay
    in front of them: the dispatch makes their checks itself and leaves to them every
    request they would refuse.

    ``serve run`` always deploys at ``/``, so the prefix that ``deployment()`` was given is
    applied here, inside the app; the mounted app's lifespan still runs.
    """
    # The media-type guard, the body cap, then ``/metrics``.
    guards = [
        Middleware(RefuseInternalMediaTypes, error_body=error_body),
        Middleware(LimitRequestBody, error_body=error_body, limit=max_body_size()),
        Middleware(ServeReplicaMetrics, path="/metrics"),
    ]
    own: list[Any] = [middleware.cls for middleware in app.user_middleware]
    at = own.index(APIDispatch) + 1 if APIDispatch in own else 0
    app.user_middleware[at:at] = guards
    if route_prefix == "/":
        return app

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # ``app``, the service's own app, not the wrapper around it (which recursed).
        async with app.router.lifespan_context(app):
            yield

    return Starlette(routes=[Mount(route_prefix, app=app)], lifespan=lifespan)
