"""The deployment that hosts one BentoML 1.2+ service: the root, or a dependency.

Every service runs inside BentoML's own app for it (``ServiceAppFactory``), the one
``bentoml serve`` runs in each worker, so ``__init__``, ``@bentoml.on_startup`` /
``on_shutdown``, ``bentoml.Context``, pydantic IO, files, mounted ASGI apps, tasks and
BentoML's error answers behave as they do there. What changes:

- its ``bentoml.depends(...)`` attributes are ``ServiceProxy`` objects over Ray handles,
  filled in before the service is instantiated;
- batchable APIs are batched by ``serve.batch`` instead of BentoML's dispatcher;
- the per-request middlewares whose work Ray Serve does are left out, and the traffic
  timeout is ``RequestTimeout`` (see ``RayServiceAppFactory.middlewares``);
- an API request that needs nothing else goes straight to its endpoint, past the router
  and the guards (``APIDispatch``; see ``RayServiceAppFactory.__call__``);
- sync API functions run on ``WorkerThreads`` instead of anyio's threads.

The root's app is the Ray ingress (HTTP). A dependency's app is never exposed; its APIs
are reached over handles, through ``call`` and ``stream``, which run them as its HTTP
routes would (batching, thread pool, context), minus the HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response

from ._api_dispatch import APIDispatch, direct_routes, routes_direct_first
from ._batch_gate import gated_batch
from ._batching import merge_values
from ._bento_source import BentoSource
from ._bentoml_internals import (
    AccessLogMiddleware,
    AutoContainer,
    ContextMiddleware,
    MaxConcurrencyMiddleware,
    RunnerTrafficMetricsMiddleware,
    ServiceAppFactory,
    TimeoutMiddleware,
    deployment_hooks,
    get_original_func,
    prepare_task_store,
    resolve_dependency,
    service_instance,
    tracing_exporter_type,
)
from ._body_limit import max_body_size
from ._public_ingress import public_app
from ._ray_compat import replica_built_ingress
from ._replica_retry import CallTarget
from ._request_timeout import RequestTimeout
from ._service_proxy import ServiceProxy
from ._worker_threads import WorkerThreads

#: One call of a batchable API: its batch argument, and the other keyword arguments.
BatchCall = tuple[Any, dict[str, Any]]


class RayServiceAppFactory(ServiceAppFactory):  # type: ignore[misc]
    """BentoML's app for one service, as a Ray replica runs it (see the module's docstring)."""

    def __init__(self, service: Any, is_main: bool, batching: dict[str, dict[str, Any]]) -> None:
        self._traced = tracing_exporter_type() is not None
        self._server_header = f"BentoML Service/{service.name}"
        super().__init__(service, is_main=is_main)
        for method in service.apis.values():
            _answer_mime_type_from_cache(method.output_spec)
        self._local_apis: dict[str, tuple[Callable[..., Any], bool]] = {}
        # What BentoML's anyio limiter allows: ``threads`` sync calls at a time (default 1).
        self._threads = WorkerThreads(int(service.config.get("threads") or 1), service.name)
        self.batched: dict[str, Callable[[BatchCall], Awaitable[Any]]] = {
            name: gated_batch(options, self._batch_function(name))
            for name, options in batching.items()
        }

    @property
    def middlewares(self) -> list[Any]:
        """BentoML's middlewares, minus those whose work Ray Serve does, and a lighter timeout.

        - The concurrency limit: ``traffic.max_concurrency`` is the replica's
          ``max_ongoing_requests``, so Ray sends no more than that. BentoML's own count lags
          Ray's: a request whose client went away is released by Ray at once but holds
          BentoML's count until its worker thread ends, so BentoML answered the next
          request 429 although Ray had room for it.
        - The request metrics and the access log: Ray Serve counts, times and logs every
          request itself, as for runner-based services.
        - Tracing, unless BentoML's tracing has an exporter: without one its spans go
          nowhere, yet making them was 40 % of the app's work per request.
        - ``traffic.timeout`` is applied by ``RequestTimeout``, as for runner-based
          services: the same 504, without a task and a timer per request.
        """
        dropped: tuple[type, ...] = (
            MaxConcurrencyMiddleware,
            RunnerTrafficMetricsMiddleware,
            AccessLogMiddleware,
        )
        if not self._traced:
            dropped += (OpenTelemetryMiddleware,)
        # BentoML's own entries come first, one of each; a service's own middlewares (which
        # may use the same classes) come after them and are all kept.
        to_drop, to_replace = set(dropped), {TimeoutMiddleware}
        kept = []
        for middleware in super().middlewares:
            if middleware.cls in to_drop:
                to_drop.discard(middleware.cls)
                continue
            if middleware.cls in to_replace:
                to_replace.discard(middleware.cls)
                middleware = Middleware(RequestTimeout, timeout=middleware.kwargs["timeout"])
            kept.append(middleware)
        return kept

    def __call__(self) -> Starlette:
        """BentoML's app, its API routes first, and ``APIDispatch`` when nothing is lost.

        Untraced, with no middleware of the service's own and no CORS, the app's middlewares
        are only the traffic timeout and BentoML's request context: an API request with a
        declared body length then goes from the timeout straight to its endpoint, inside
        the request context, skipping the guards ``public_app`` adds (``APIDispatch``
        makes their checks and leaves every request they would refuse to them), the
        router and Starlette's exception middleware. Its endpoint catches every error, so
        the answer is the same: ``test_service_app`` compares the two ways. In Ray's
        high-throughput mode it cut the batched vector model's Python per request, sampled
        in its root replica, from 944 to 579 us.
        """
        app: Starlette = super().__call__()
        if not self.is_main:  # a dependency's app never takes HTTP
            return app
        routes = app.router.routes
        direct = direct_routes(routes, self._is_api_route)
        routes[:] = routes_direct_first(routes, direct)
        own = [middleware.cls for middleware in app.user_middleware]
        if direct and own in ([RequestTimeout, ContextMiddleware], [ContextMiddleware]):
            dispatch = Middleware(
                APIDispatch,
                routes=direct,
                body_limit=max_body_size(),
                request_context=self.service.context.in_request,
            )
            app.user_middleware.insert(own.index(ContextMiddleware), dispatch)
        return app

    def _is_api_route(self, route: Any) -> bool:
        endpoint = getattr(route, "endpoint", None)
        return (
            isinstance(endpoint, functools.partial) and endpoint.func == self.api_endpoint_wrapper
        )

    def _add_response_headers(self, resp: Response) -> None:
        # BentoML looks its settings up on every response (8 % of a request's work here).
        # Untraced, a request has no ID or trace ID to report, so the server's name is all.
        if self._traced:
            super()._add_response_headers(resp)
        else:
            resp.headers["Server"] = self._server_header

    async def _to_thread(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Where BentoML runs sync API functions: on threads that stay (``_worker_threads``)."""
        return await self._threads.run(func, *args, **kwargs)

    def _batch_function(
        self, name: str
    ) -> Callable[[list[BatchCall]], Coroutine[Any, Any, list[Any]]]:
        in_dim, out_dim = self.service.apis[name].batch_dim

        async def run_batch(calls: list[BatchCall]) -> list[Any]:
            first_kwargs = calls[0][1]
            if any(kwargs != first_kwargs for _, kwargs in calls):
                return [await self._run_api(name, (value,), kwargs) for value, kwargs in calls]
            batch, offsets = merge_values([value for value, _ in calls], in_dim)
            result = await self._run_api(name, (batch,), first_kwargs)
            # As BentoML's own app cuts a 1.2+ API's result: whole, along ``out_dim``. (A
            # runner's tuple result is cut item by item: ``_batching.split_result``.)
            return list(AutoContainer.batch_to_batches(result, offsets, out_dim))

        return run_batch

    async def _run_api(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        func, is_async = self._local_api(name)
        if is_async:
            return await func(*args, **kwargs)
        return await self._to_thread(func, *args, **kwargs)

    def _local_api(self, name: str) -> tuple[Callable[..., Any], bool]:
        """The instance's API function and whether it is async, looked up once per API.

        BentoML builds the function afresh on each lookup, signature included.
        """
        found = self._local_apis.get(name)
        if found is None:
            func = getattr(service_instance(self), name).local
            found = self._local_apis[name] = (
                func,
                inspect.iscoroutinefunction(get_original_func(func)),
            )
        return found

    async def batch_infer(
        self, name: str, input_args: tuple[Any, ...], input_kwargs: dict[str, Any]
    ) -> Any:
        """One call of a batchable API, from HTTP or from a handle: batched when planned."""
        method = self.service.apis[name]
        kwargs = dict(input_kwargs)
        arg_names = [key for key in kwargs if key != method.ctx_param]
        if input_args:
            if len(input_args) > 1 or arg_names:
                raise TypeError("Batch inference function only accept one argument")
            value = input_args[0]
        else:
            if len(arg_names) != 1:
                raise TypeError("Batch inference function only accept one argument")
            value = kwargs.pop(arg_names[0])
        batched = self.batched.get(name)
        if batched is None:  # batching turned off: the API sees each caller's batch alone
            return await self._run_api(name, (value,), kwargs)
        return await batched((value, kwargs))

    async def call_api(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run an API for a dependent service, as its HTTP route would."""
        method = self.service.apis[name]
        if method.ctx_param is not None:
            kwargs = {**kwargs, method.ctx_param: self.service.context}
        if method.batchable:
            return await self.batch_infer(name, args, kwargs)
        return await self._run_api(name, args, kwargs)

    async def stream_api(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Run a streaming (generator) API for a dependent service, chunk by chunk."""
        method = self.service.apis[name]
        if method.ctx_param is not None:
            kwargs = {**kwargs, method.ctx_param: self.service.context}
        func, _ = self._local_api(name)  # looked up once per API, as for the other calls
        if inspect.isasyncgenfunction(get_original_func(func)):
            async for chunk in func(*args, **kwargs):
                yield chunk
            return
        generator = func(*args, **kwargs)
        done = object()
        while (chunk := await self._to_thread(next, generator, done)) is not done:
            yield chunk


class ServiceHost:
    """One replica of one 1.2+ service: the service loaded, its dependencies on handles.

    ``dependencies`` maps each internal dependency to its deployment's handle (wrapped
    with its retry budget).
    """

    def __init__(
        self,
        source: BentoSource,
        service_name: str,
        dependencies: dict[str, CallTarget],
        batching: dict[str, dict[str, Any]],
        is_root: bool,
    ) -> None:
        root = source.load()
        service = root if root.name == service_name else root.find_dependent_by_name(service_name)
        for dependency in service.dependencies.values():
            # External dependencies (url=..., deployment=...) keep BentoML's HTTP client.
            external = dependency.url or dependency.deployment
            if dependency.on is not None and not external and dependency.on.name in dependencies:
                target = dependencies[dependency.on.name]
                resolve_dependency(dependency, ServiceProxy(dependency.on, target))
        # ``bentoml serve`` runs these once, before its workers start; on Ray each replica
        # may be on another node, so each runs them before loading the service.
        for hook in deployment_hooks(service):
            hook()
        if service.needs_task_db():
            prepare_task_store()
        service.inject_config()
        self.factory = RayServiceAppFactory(service, is_main=is_root, batching=batching)

    async def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self.factory.call_api(name, args, kwargs)

    async def stream(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        async for chunk in self.factory.stream_api(name, args, kwargs):
            yield chunk


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
        service_name: str,
        dependencies: dict[str, CallTarget],
        batching: dict[str, dict[str, Any]],
        route_prefix: str,
    ) -> None:
        super().__init__(source, service_name, dependencies, batching, is_root=True)
        self.route_prefix = route_prefix

    def build_asgi_app(self) -> Starlette:
        return public_app(self.factory(), self.route_prefix, error_body=_bentoml_error)


class DependencyServiceDeployment(ServiceHost):
    """A service that others depend on, reached only over handles.

    Ray Serve allows one ASGI ingress per application, so a dependency runs its BentoML
    app's lifespan itself: the constructor (async, which Ray Serve awaits) returns once the
    service is instantiated and its startup hooks ran, so no call reaches it earlier.
    """

    async def __init__(  # type: ignore[misc]
        self,
        source: BentoSource,
        service_name: str,
        dependencies: dict[str, CallTarget],
        batching: dict[str, dict[str, Any]],
    ) -> None:
        super().__init__(source, service_name, dependencies, batching, is_root=False)
        app = self.factory()
        self._lifespan = contextlib.AsyncExitStack()
        await self._lifespan.enter_async_context(app.router.lifespan_context(app))

    async def __del__(self) -> None:
        # Ray Serve awaits an async ``__del__`` when the replica stops: shutdown hooks run.
        # (No stack if the constructor failed before entering the lifespan.)
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            await lifespan.aclose()


def _answer_mime_type_from_cache(spec: type[Any]) -> None:
    """Compute an IO model's response media type once, not per response.

    BentoML derives it from the model's JSON schema on every answer, which pydantic builds
    afresh each time: about a tenth of the root replica's time under load. The type never
    changes while the replica lives. (Setting ``media_type`` instead would also change the
    service's published schema.)
    """
    value = spec.mime_type()
    spec.mime_type = classmethod(lambda cls: value)


def _bentoml_error(message: str) -> Any:
    """The body shape a 1.2+ BentoML service answers errors with."""
    return {"error": message}
