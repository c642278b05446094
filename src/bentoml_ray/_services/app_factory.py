"""BentoML's own app for one 1.2+ service, as a Ray replica runs it.

Every service runs inside BentoML's own app for it (``ServiceAppFactory``), the one
``bentoml serve`` runs in each worker, so ``__init__``, ``@bentoml.on_startup`` /
``on_shutdown``, ``bentoml.Context``, pydantic IO, files, mounted ASGI apps, tasks and
BentoML's error answers behave as they do there. What changes:

- batchable APIs are batched by ``serve.batch`` instead of BentoML's dispatcher;
- the per-request middlewares whose work Ray Serve does are left out, and the traffic
  timeout is the public ingress's (see ``RayServiceAppFactory.middlewares``);
- sync API functions run on ``WorkerThreads`` instead of anyio's threads;
- its APIs can be run for a dependent service (``call_api``, ``stream_api``), as its
  HTTP routes would run them (batching, thread pool, context), minus the HTTP;
- task results live in the application's hub (``task_store``), and a cancel reaches the
  task wherever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._bentoml_internals import (
    AccessLogMiddleware,
    AutoContainer,
    ContextMiddleware,
    MaxConcurrencyMiddleware,
    RunnerTrafficMetricsMiddleware,
    ServiceAppFactory,
    TimeoutMiddleware,
    get_original_func,
    service_instance,
    tracing_exporter_type,
)
from .._replica.batch_gate import gated_batch
from .._replica.batch_merge import merge_values
from .._replica.worker_threads import WorkerThreads
from .endpoint import CompiledEndpoint
from .task_store import HubResultStore

if TYPE_CHECKING:
    from .._replica.hub_link import HubLink

#: The keys of a task's status answer, as BentoML's ``ResultRow.to_json`` gives them.
_STATUS_KEYS = ("task_id", "status", "created_at", "executed_at")

#: One call of a batchable API: its batch argument, and the other keyword arguments.
BatchCall = tuple[Any, dict[str, Any]]


class RayServiceAppFactory(ServiceAppFactory):  # type: ignore[misc]
    """BentoML's app for one service, as a Ray replica runs it (see the module's docstring)."""

    def __init__(
        self,
        service: Any,
        is_main: bool,
        batching: dict[str, dict[str, Any]],
        hub: HubLink | None = None,
        sync_inline: bool = False,
    ) -> None:
        self._hub = hub
        self._sync_inline = sync_inline
        self._traced = tracing_exporter_type() is not None
        self._server_header = f"BentoML Service/{service.name}"
        super().__init__(service, is_main=is_main)
        for method in service.apis.values():
            _answer_mime_type_from_cache(method.output_spec)
        self._local_apis: dict[str, tuple[Callable[..., Any], bool]] = {}
        # What BentoML's anyio limiter allows: ``threads`` sync calls at a time (default 1).
        self._threads = WorkerThreads(int(service.config.get("threads") or 1), service.name)
        self.batched: dict[str, Callable[[BatchCall], Awaitable[Any]]] = {
            name: gated_batch(options, self._batch_function(name), f"{service.name}.{name}")
            for name, options in batching.items()
        }

    @property
    def middlewares(self) -> list[Any]:
        """BentoML's middlewares, minus those whose work Ray Serve or the ingress does.

        - The concurrency limit: ``traffic.max_concurrency`` is the replica's
          ``max_ongoing_requests``, so Ray sends no more than that. BentoML's own count lags
          Ray's: a request whose client went away is released by Ray at once but holds
          BentoML's count until its worker thread ends, so BentoML answered the next
          request 429 although Ray had room for it.
        - The request metrics and the access log: Ray Serve counts, times and logs every
          request itself, as for runner-based services.
        - Tracing, unless BentoML's tracing has an exporter: without one its spans go
          nowhere, yet making them was 40 % of the app's work per request.
        - The timeout: the public ingress applies ``traffic.timeout`` (``self.timeout``)
          with ``RequestTimeout``, as for runner-based services: the same 504, without a
          task and a timer per request.
        """
        dropped: set[type] = {
            MaxConcurrencyMiddleware,
            RunnerTrafficMetricsMiddleware,
            AccessLogMiddleware,
            TimeoutMiddleware,
        }
        if not self._traced:
            dropped.add(OpenTelemetryMiddleware)
        # BentoML's own entries come first, one of each; a service's own middlewares (which
        # may use the same classes) come after them and are all kept.
        kept = []
        for middleware in super().middlewares:
            if middleware.cls in dropped:
                dropped.discard(middleware.cls)
                continue
            kept.append(middleware)
        return kept

    async def create_instance(self, app: Starlette) -> None:
        await super().create_instance(app)
        _keep_api_functions(service_instance(self), self.service.apis)
        sqlite_store: Any = getattr(self, "_result_store", None)
        if self._hub is not None and sqlite_store is not None:
            await sqlite_store.__aexit__(None, None, None)  # BentoML's SQLite file: unused
            self._result_store = HubResultStore(self._hub)

    async def _run_task(self, task_id: str, name: str, request: Request) -> None:
        """Run a task where a cancel from any replica (through the hub) stops it."""
        run = asyncio.ensure_future(super()._run_task(task_id, name, request))
        if self._hub is not None:
            self._hub.running(task_id, run)
        try:
            await run
        except asyncio.CancelledError:
            if self._hub is None or not self._hub.was_cancelled(task_id):
                raise  # the replica is stopping: not the task cancelled

    async def cancel_task(self, request: Request) -> Response:
        """Cancel a task wherever it runs: 200 and its row, 404 for an unknown task.

        ``bentoml serve`` only marks the task (its worker runs on, and the task's answer
        then overwrites the mark) and answers 400; here the task is stopped and stays
        ``canceled``. A task that had already ended is left as it was.
        """
        store = getattr(self, "_result_store", None)
        if not isinstance(store, HubResultStore):
            return await super().cancel_task(request)  # type: ignore[no-any-return]
        task_id = request.query_params.get("task_id")
        if task_id is None:
            resp = JSONResponse({"error": "task_id is required"}, status_code=400)
        else:
            try:
                row = await store.cancel(task_id)
            except KeyError:
                resp = JSONResponse({"error": "task_id not found"}, status_code=404)
            else:
                resp = JSONResponse({key: row[key] for key in _STATUS_KEYS})
        self._add_response_headers(resp)
        return resp

    @property
    def only_request_context(self) -> bool:
        """Whether the app's sole middleware is BentoML's request context.

        Untraced, with no middleware of the service's own and no CORS, that is all: an API
        request may then go straight to its endpoint, the context entered around it
        (``_ingress.gate``). In Ray's high-throughput mode that cut the batched vector
        model's Python per request, sampled in its root replica, from 944 to 579 us.
        """
        return [middleware.cls for middleware in self.middlewares] == [ContextMiddleware]

    def is_api_route(self, route: Any) -> bool:
        """Whether ``route`` of the app is one of the service's APIs."""
        endpoint = getattr(route, "endpoint", None)
        return (
            isinstance(endpoint, functools.partial) and endpoint.func == self.api_endpoint_wrapper
        )

    def planned_endpoint(self, route: Any) -> CompiledEndpoint | None:
        """The endpoint planned for an API route of the app (``endpoint``), or None where
        BentoML's own endpoint serves it."""
        if not self.is_api_route(route):
            return None
        return CompiledEndpoint.plan(self, route.endpoint.args[0])

    def _add_response_headers(self, resp: Response) -> None:
        # BentoML looks its settings up on every response (8 % of a request's work here).
        # Untraced, a request has no ID or trace ID to report, so the server's name is all.
        if self._traced:
            super()._add_response_headers(resp)
        else:
            resp.headers["Server"] = self._server_header

    async def _to_thread(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Where BentoML runs sync API functions: on threads that stay (``WorkerThreads``).

        With ``sync_inline`` (a Ray Data actor, which makes one call at a time and holds no
        handle a sync function would block on) they run on the loop: the hop bought nothing.
        """
        if self._sync_inline:
            return func(*args, **kwargs)
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
            # runner's tuple result is cut item by item: ``_replica.batch_merge.split_result``.)
            return list(AutoContainer.batch_to_batches(result, offsets, out_dim))

        return run_batch

    async def _run_api(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        func, is_async = self._local_api(name)
        if is_async:
            return await func(*args, **kwargs)
        return await self._to_thread(func, *args, **kwargs)

    def _local_api(self, name: str) -> tuple[Callable[..., Any], bool]:
        """The instance's API function and whether it is async, looked up once per API.

        The function itself is made once (``_keep_api_functions``); this keeps the
        ``.local`` form and the async check beside it.
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


def _keep_api_functions(instance: Any, apis: dict[str, Any]) -> None:
    """Make each API function of the service's instance once, not on every request.

    An API is a descriptor on the service's class that builds its function afresh, with
    ``inspect.signature``, at every attribute lookup, and BentoML's endpoint looks it up
    per request: a tenth of the batched vector model's work in its root replica. The
    function made once, kept on the instance, is the same on every lookup. (A class that
    refuses new attributes keeps BentoML's lookup.)
    """
    for name in apis:
        if name not in getattr(instance, "__dict__", {name: None}):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(instance, name, getattr(instance, name))


def _answer_mime_type_from_cache(spec: type[Any]) -> None:
    """Compute an IO model's response media type once, not per response.

    BentoML derives it from the model's JSON schema on every answer, which pydantic builds
    afresh each time: about a tenth of the root replica's time under load. The type never
    changes while the replica lives. (Setting ``media_type`` instead would also change the
    service's published schema.)
    """
    value = spec.mime_type()
    spec.mime_type = classmethod(lambda cls: value)
