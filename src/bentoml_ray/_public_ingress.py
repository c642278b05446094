"""What every public HTTP app gets in front of it: no pickle from clients, a cap on body
size (see ``_body_limit``), and a path prefix.

BentoML's services talk to each other in ``application/vnd.bentoml+pickle``; accepting it
from the network would let any client run code in the replica. On Ray, services talk over
handles, so the public ingress refuses every ``application/vnd.bentoml*`` body outright.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from ._body_limit import LimitRequestBody, max_body_size
from ._replica_metrics import ServeReplicaMetrics

#: BentoML's internal media types (``application/vnd.bentoml+pickle`` and friends).
INTERNAL_MEDIA_TYPE_PREFIX = b"application/vnd.bentoml"

#: Builds the JSON body of an error answer from its message, in the service's own style.
ErrorBody = Callable[[str], Any]


def is_internal_media_type(content_type: bytes) -> bool:
    """Whether a raw ``Content-Type`` header value is one of BentoML's internal types."""
    return content_type.lower().lstrip().startswith(INTERNAL_MEDIA_TYPE_PREFIX)


class RefuseInternalMediaTypes:
    """ASGI middleware: 415 for any request body in one of BentoML's internal media types."""

    def __init__(self, app: ASGIApp, error_body: ErrorBody) -> None:
        self.app = app
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-type" and is_internal_media_type(value):
                    message = (
                        f"Content-Type {value.decode('latin-1')!r} is internal to BentoML "
                        "and is not accepted from clients; send JSON or the API's own type."
                    )
                    await JSONResponse(self.error_body(message), 415)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def public_app(app: Starlette, route_prefix: str, error_body: ErrorBody) -> Starlette:
    """``app`` behind the media-type guard and the body cap, served under ``route_prefix``.

    The guards are added to ``app`` itself (before it first runs), as its outermost
    middlewares, so that Ray Serve still gets a Starlette app: Ray names each request's
    route (its metrics' ``route`` label) from a Starlette app's routes only.

    ``serve run`` always deploys at ``/``, so the prefix that ``deployment()`` was given is
    applied here, inside the app; the mounted app's lifespan still runs.
    """
    # ``add_middleware`` puts each in front of those before it, so they run in the
    # opposite order: the media-type guard, the body cap, then ``/metrics``.
    app.add_middleware(ServeReplicaMetrics, path="/metrics")
    app.add_middleware(LimitRequestBody, error_body=error_body, limit=max_body_size())
    app.add_middleware(RefuseInternalMediaTypes, error_body=error_body)
    if route_prefix == "/":
        return app

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # ``app``, the service's own app, not the wrapper around it (which recursed).
        async with app.router.lifespan_context(app):
            yield

    return Starlette(routes=[Mount(route_prefix, app=app)], lifespan=lifespan)
