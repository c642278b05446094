"""The deployments that host a 1.2+ service: the root (the HTTP ingress), or a dependency.

Each replica loads the Bento's root service, picks its own service from the graph, fills
its ``bentoml.depends(...)`` attributes with ``ServiceProxy`` objects over Ray handles
before the service is instantiated, and runs it in BentoML's own app for it
(``app_factory``). The root's app is the Ray ingress, behind the public ingress
(``_ingress.app``). A dependency's app is never exposed; its APIs are reached over
handles, through ``call`` and ``stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette

from .._bento.source import BentoSource
from .._defaults import DEPENDENCY_TIMEOUT_S
from .._ingress.app import public_ingress
from .._ingress.request_metrics import RequestMetricsSpec, request_counts, request_metrics_spec
from .._ray_compat import replica_built_ingress
from .._replica.calls import CallTarget, wake_callees
from .._replica.hub_link import HubLink
from .._replica.versions import (
    CalleeRollout,
    IngressRollout,
    callee_loaded,
    check_caller,
    ingress_ready,
    report_load,
)
from .app_factory import RayServiceAppFactory
from .loading import load_service


class ServiceHost:
    """One replica of one 1.2+ service: the service loaded, its dependencies on handles.

    ``dependencies`` maps each internal dependency to its deployment's handle (wrapped
    with its retry budget); ``hub`` is the application's hub (None outside Ray: tests and
    benchmarks host a service in a plain process). ``route_prefix`` is where
    the root's HTTP app is served; a dependency, never served over HTTP, has none.

    A call carries its caller's Bento version and is refused if it is not this one
    (``_replica.versions``). A dependency's ``traffic.timeout`` counts from when this replica
    takes the call, as BentoML's server counts it, so a caller's wait for a replica to start
    is not taken out of it.
    """

    def __init__(
        self,
        source: BentoSource,
        dependencies: dict[str, CallTarget],
        hub: CallTarget | None,
        service_name: str,
        batching: dict[str, dict[str, Any]],
        route_prefix: str | None = None,
    ) -> None:
        wake_callees(dependencies.values())  # before the service loads
        self.started = time.time()  # said in refusals (``check_caller``)
        self.route_prefix = route_prefix
        self.version = source.version
        self.hub = HubLink(hub) if hub is not None else None  # None: served outside Ray
        service = load_service(source, service_name, dependencies)
        self.factory = RayServiceAppFactory(
            service, is_main=route_prefix is not None, batching=batching, hub=self.hub
        )
        # Calls from dependent services, counted as ``bentoml serve``'s HTTP server for this
        # service counts them (the root's HTTP requests are counted by its ingress).
        spec = None if route_prefix is not None else service_metrics_spec(service)
        self._counts = None if spec is None else request_counts(spec)
        self._paths = {name: api.route for name, api in service.apis.items()}
        self._timeout_s = float(self.factory.timeout or DEPENDENCY_TIMEOUT_S)

    async def wake(self) -> None:
        """A caller starting from zero replicas started this one (``calls.wake_callees``)."""

    async def call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str | None = None
    ) -> Any:
        check_caller(self.version, caller, self.started)
        running = asyncio.wait_for(self.factory.call_api(name, args, kwargs), self._timeout_s)
        if self._counts is None:
            return await running
        path, status = self._paths[name], 500
        started = self._counts.started(path)
        try:
            result = await running
            status = 200
            return result
        finally:
            self._counts.ended(path, status, started)

    async def stream(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str | None = None
    ) -> AsyncGenerator[Any, None]:
        check_caller(self.version, caller, self.started)
        path, status = self._paths[name], 500
        started = None if self._counts is None else self._counts.started(path)
        try:
            async for chunk in self.factory.stream_api(name, args, kwargs):
                yield chunk
            status = 200
        finally:
            if self._counts is not None and started is not None:
                self._counts.ended(path, status, started)


@replica_built_ingress
class RootServiceDeployment(ServiceHost):
    """The root service: BentoML's app for it is the application's HTTP ingress.

    The replica builds its ASGI app once the constructor is done, and Ray Serve runs the
    app's lifespan, in which BentoML instantiates the service and runs its startup hooks:
    the replica takes traffic only once that is done.
    """

    def __init__(
        self,
        source: BentoSource,
        dependencies: dict[str, CallTarget],
        hub: CallTarget | None,
        service_name: str,
        batching: dict[str, dict[str, Any]],
        route_prefix: str,
        rollout: CalleeRollout | None = None,
    ) -> None:
        super().__init__(source, dependencies, hub, service_name, batching, route_prefix)
        self.rollout = rollout

    def build_asgi_app(self) -> Starlette:
        ready = functools.partial(ingress_ready, self.rollout, self.hub, self.version)
        return service_ingress(self.factory, self.route_prefix or "/", self.hub, ready)


def service_ingress(
    factory: RayServiceAppFactory,
    route_prefix: str,
    hub: HubLink | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The public ingress of a root service's app (BentoML's, as ``factory`` makes it)."""
    service = factory.service
    return public_ingress(
        factory(),
        route_prefix=route_prefix,
        timeout=factory.timeout,  # the service's ``traffic.timeout``
        error_body=_bentoml_error,
        is_api=factory.is_api_route,
        direct=factory.only_request_context,
        request_context=service.context.in_request,
        endpoint_for=factory.planned_endpoint,
        metrics=service_metrics_spec(service),
        hub=hub,
        ready=ready,
    )


def service_metrics_spec(service: Any) -> RequestMetricsSpec | None:
    """BentoML's request metrics of a 1.2+ service, named as ``bentoml serve`` names them."""
    bento = service.bento
    return request_metrics_spec(
        bento.tag.name if bento else service.name,
        bento.tag.version if bento else None,
        runner_name=service.name,
    )


class DependencyServiceDeployment(ServiceHost):
    """A service that others depend on, reached only over handles.

    Ray Serve allows one ASGI ingress per application, so a dependency runs its BentoML
    app's lifespan itself: the constructor (async, which Ray Serve awaits) returns once the
    service is instantiated and its startup hooks ran, so no call reaches it earlier. In a
    rollout (``rollout``), it then waits until the ingress serves only its version.
    """

    async def __init__(  # type: ignore[misc]
        self,
        source: BentoSource,
        dependencies: dict[str, CallTarget],
        hub: CallTarget | None,
        service_name: str,
        batching: dict[str, dict[str, Any]],
        rollout: IngressRollout | None = None,
    ) -> None:
        self._lifespan = contextlib.AsyncExitStack()
        try:
            super().__init__(source, dependencies, hub, service_name, batching)
            app = self.factory()
            await self._lifespan.enter_async_context(app.router.lifespan_context(app))
        except Exception as exc:
            await report_load(getattr(self, "hub", None), source.version, exc)
            raise
        try:
            await callee_loaded(rollout, f"service {service_name!r}", self.hub, self.version)
        except BaseException:
            await self._lifespan.aclose()
            raise

    async def __del__(self) -> None:
        # Ray Serve awaits an async ``__del__`` when the replica stops: shutdown hooks run.
        # (No stack if the constructor failed before entering the lifespan.)
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            await lifespan.aclose()


def _bentoml_error(message: str) -> Any:
    """The body shape a 1.2+ BentoML service answers errors with."""
    return {"error": message}
