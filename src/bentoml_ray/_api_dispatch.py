"""An API request straight to its endpoint; every other request through Starlette's router.

Starlette tries its routes one by one, and each request passes its middlewares before the
endpoint runs. For a small model that was a tenth of the replica's work per request (iris,
counted in CPU instructions: 1.46 million per request against 1.18 million for a
hand-written Starlette deployment of the same model). ``APIDispatch`` sits at the top of
the public app's middleware stack, inside Starlette's own error handling and the traffic
timeout: a request that needs nothing below it goes directly to its endpoint (one of the
APIs' paths and methods, a body of declared length within the size limit, not one of
BentoML's internal media types). Anything else, including every request that a guard
would refuse, goes on down the stack, so both ways answer alike; the conformance tests
run against both. Both kinds of service use it: the runner-based API server, and a 1.2+
root, whose endpoints also want BentoML's request context (``request_context``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ._media_type_guard import is_internal_media_type


class APIDispatch:
    """ASGI middleware: the API routes that skip the router, by exact path, before ``app``.

    ``prefix`` is the path the API server's routes are mounted at inside the app (empty
    at ``/``); the routes' paths include it. ``request_context``, if given, is entered
    around the endpoint and its response, as a middleware below would have been.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, Route],
        body_limit: int | None,
        prefix: str = "",
        request_context: Callable[[Request], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.body_limit = body_limit
        self.prefix = prefix
        self.request_context = request_context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._direct_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        # What Starlette's router (and the prefix's mount) put in the scope, for code that
        # reads them.
        if self.prefix:
            root_path = scope.get("root_path", "")
            scope["app_root_path"] = scope.get("app_root_path", root_path)
            scope["root_path"] = root_path + self.prefix
        scope.setdefault("router", scope["app"].router)  # an outer app's router stays
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = dict(scope.get("path_params", {}))
        # The context's request and the endpoint's are two objects, as in the full app: a
        # body the endpoint reads is not cached for ``ctx.request`` there either.
        context = (
            self.request_context(Request(scope, receive, send))
            if self.request_context
            else nullcontext()
        )
        with context:
            response = await route.endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

    def _direct_route(self, scope: Scope) -> Route | None:
        if scope["type"] != "http":
            return None
        route = self.routes.get(route_path(scope))
        if route is None or scope["method"] not in (route.methods or ()):
            return None
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if declared is not None:
                    return None  # two lengths: the HTTP server or the full app judges
                try:
                    declared = int(value)
                except ValueError:
                    return None
            elif name == b"content-type" and is_internal_media_type(value):
                return None  # the full app refuses it
            elif name == b"transfer-encoding":
                return None  # framed by chunks, whatever length it declares: counted there
        if declared is None:
            return None  # a chunked body is counted as it streams, in the full app
        if self.body_limit is not None and declared > self.body_limit:
            return None
        return route


def direct_routes(
    routes: Sequence[BaseRoute], is_api: Callable[[BaseRoute], bool], prefix: str = ""
) -> dict[str, Route]:
    """The API routes that a path alone picks out, as Starlette's router would pick them.

    ``routes`` in the router's order. A path with parameters stays with the router, and so
    does one that a route before it answers first (any route whose pattern matches it); of
    two APIs at one path, the first one wins, as in Starlette. A route of a kind this cannot
    judge (a ``Host``, say) keeps every API after it with the router.
    """
    direct: dict[str, Route] = {}
    earlier: list[Route | Mount] = []
    for route in routes:
        if isinstance(route, Route) and is_api(route):
            path = route.path
            if "{" not in path and not any(r.path_regex.match(path) for r in earlier):
                direct.setdefault(prefix + path, route)
        if isinstance(route, Route | Mount):
            earlier.append(route)
        elif not isinstance(route, WebSocketRoute):  # a websocket route never takes HTTP
            break
    return direct


def routes_direct_first(
    routes: Sequence[BaseRoute], direct: Mapping[str, Route]
) -> list[BaseRoute]:
    """``routes`` with the direct ones first: Starlette picks the same route for every request.

    Nothing before a direct route matches its path, so it is picked for the same requests
    wherever it stands; first, it is found sooner by Ray Serve, which names each request's
    route (its metrics' label) by trying the routes in order. The names do not change.
    """
    first = list(direct.values())
    moved = {id(route) for route in first}
    return [*first, *(route for route in routes if id(route) not in moved)]


def route_path(scope: Scope) -> str:
    """The path below the app's mount point, as Starlette's router matches it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    below = path[len(root_path) :]
    return below if below == "" or below[0] == "/" else path
