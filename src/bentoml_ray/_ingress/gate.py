"""The guards, then an API request straight to its endpoint; anything else to the service's app.

Starlette tries its routes one by one, and each request passes its middlewares before the
endpoint runs. For a small model that was a tenth of the replica's work per request (iris,
counted in CPU instructions: 1.46 million per request against 1.18 million for a
hand-written Starlette deployment of the same model). So when the service has no
middleware of its own, an API request that no guard acts on (one of the APIs' paths and
methods, not one of BentoML's internal media types, and, while there is a size limit, a
body of declared length within it) goes from here directly to its endpoint. Both ways
answer alike; the conformance tests run against both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .guard import Guard, RequestHead, read_head, route_path

#: Enters a service's per-request context around its endpoint (BentoML 1.2+'s).
RequestContext = Callable[[Request], AbstractContextManager[Any]]


class PublicGate:
    """ASGI middleware: each guard that acts on a request, in order; else the direct path.

    ``service`` is the service's own app, mounted at ``prefix`` (empty at ``/``) behind
    ``app``; ``direct`` maps full paths (the prefix included) to the API routes that may
    skip it. ``request_context``, if given, is entered around a direct endpoint and its
    response, as the service's own context middleware would have been. ``endpoint_for``
    gives a route's planned endpoint, if it has one, which a direct request then goes to
    instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        guards: Sequence[Guard],
        service: Starlette,
        prefix: str,
        direct: Mapping[str, Route],
        request_context: RequestContext | None = None,
        endpoint_for: Callable[[Route], ASGIApp | None] | None = None,
    ) -> None:
        self.app = app
        self.guards = list(guards)
        self.service = service
        self.prefix = prefix
        self.direct = dict(direct)
        self.request_context = request_context
        # By the route's id (Starlette's routes are not hashable): an endpoint planned for
        # the route (``_services.endpoint``), which enters its own request context.
        self.endpoints: dict[int, ASGIApp] = {}
        if endpoint_for is not None:
            for route in self.direct.values():
                endpoint = endpoint_for(route)
                if endpoint is not None:
                    self.endpoints[id(route)] = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = read_head(scope)
        route = self.direct_route(scope, head)
        if route is None:
            acting = [guard for guard in self.guards if guard.acts_on(scope, head)]
            if acting:
                await self._through(acting, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # What the mount and the service's app put in the scope, for code that reads them.
        root_path = scope.get("root_path", "")
        scope["app_root_path"] = scope.get("app_root_path", root_path)
        scope["root_path"] = root_path + self.prefix
        scope.setdefault("router", scope["app"].router)  # the outermost router, as routed
        scope["app"] = self.service
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = dict(scope.get("path_params", {}))
        endpoint = self.endpoints.get(id(route))
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return
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

    def direct_route(self, scope: Scope, head: RequestHead) -> Route | None:
        """The API route an HTTP request goes straight to: its path's and method's, if no
        guard acts on the request."""
        route = self.direct.get(route_path(scope))
        if route is None or scope["method"] not in (route.methods or ()):
            return None
        if any(guard.acts_on(scope, head) for guard in self.guards):
            return None
        return route

    async def _through(
        self, guards: Sequence[Guard], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The first guard, with the others and then the app after it."""
        first, rest = guards[0], guards[1:]

        async def after(scope: Scope, receive: Receive, send: Send) -> None:
            if rest:
                await self._through(rest, scope, receive, send)
            else:
                await self.app(scope, receive, send)

        await first(scope, receive, send, after)


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
