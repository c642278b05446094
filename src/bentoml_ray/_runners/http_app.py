"""A runner-based service's own HTTP app, lean, in its API server's replica.

It serves what ``bentoml serve`` serves for the same Bento (each API at its route, decoded
and encoded by the API's own IO descriptors, ``/docs.json``, Swagger UI at ``/``, the
health probes, mounted ASGI apps, the service's middlewares and CORS from BentoML's
``http.cors`` configuration), but without BentoML's per-request tracing middleware, and
with its request metrics kept by the public ingress. Where ``bentoml serve``
answers a client's mistake with a 500 or a hang, this answers a 4xx that says what was
wrong, in BentoML's own error format.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .._bentoml_internals import (
    INDEX_HTML,
    JSON,
    STATIC_CONTENT_DIR,
    InferenceAPI,
    NumpyNdarray,
    cors_options,
    enter_request,
    is_async_callable,
    leave_request,
    numpy_dtype,
)
from .._defaults import API_THREADS
from .._replica.worker_threads import WorkerThreads

logger = logging.getLogger("bentoml_ray")

_ERROR_PREFIX = "BentoService error handling API request: "
_USER_CODE_ERROR = (
    "An error has occurred in BentoML user code when handling this request, "
    "find the error details in server logs"
)


class ClientError(Exception):
    """A request the API cannot take; the message goes back to the client."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def error_body(message: str) -> str:
    """The body ``bentoml serve`` answers a runner-based service's client errors with."""
    return _ERROR_PREFIX + message


def error_response(status_code: int, message: str) -> JSONResponse:
    """A 4xx in the shape ``bentoml serve`` uses for ``BadInput``: a JSON string."""
    return JSONResponse(error_body(message), status_code=status_code)


@dataclass(frozen=True)
class InputDecoder:
    """An API's input descriptor, with the checks around it decided once per API."""

    descriptor: Any
    expects_json: bool  # JSON-bodied: the Content-Type is checked first
    dtype: np.dtype[Any] | None  # a NumpyNdarray's declared dtype, checked after

    @classmethod
    def of(cls, api: InferenceAPI[Any]) -> InputDecoder:
        descriptor = api.input
        return cls(descriptor, isinstance(descriptor, NumpyNdarray | JSON), numpy_dtype(descriptor))

    async def decode(self, request: Request) -> Any:
        """Run the descriptor, turning every decoding failure into a ClientError."""
        if self.expects_json:
            _check_content_type(request)
        try:
            value = await self.descriptor.from_http_request(request)
        except BentoMLException as exc:
            status = exc.error_code.value
            raise ClientError(status if 400 <= status < 500 else 400, str(exc)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClientError(400, _explain_bad_json(await request.body(), exc)) from None
        except Exception as exc:  # any other decoding failure is the request's fault too
            raise ClientError(
                400, f"{self.descriptor} could not decode the request: {exc}"
            ) from None

        dtype = self.dtype
        if (
            dtype is not None
            and isinstance(value, np.ndarray)
            and not np.can_cast(value.dtype, dtype, casting="same_kind")
        ):
            raise ClientError(
                400,
                f"{self.descriptor}: expected numbers castable to dtype {dtype}, but the "
                f"request holds values of dtype {value.dtype}.",
            )
        return value


def _check_content_type(request: Request) -> None:
    """JSON-bodied APIs take ``application/json`` (or a ``+json`` type, or none at all)."""
    header = request.headers.get("content-type")
    if header is None:
        return
    media_type = header.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return
    raise ClientError(
        415, f"Content-Type {media_type!r} is not accepted here; send application/json."
    )


def _explain_bad_json(body: bytes, exc: Exception) -> str:
    # json.loads guesses UTF-16/32 from the first bytes, so judge the raw body ourselves.
    if not body.strip():
        return "The request body is empty; this API expects JSON."
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        return f"The request body is not valid UTF-8: {utf8_error}"
    return f"The request body is not valid JSON: {exc}"


def _api_endpoint(
    svc: Any, api: InferenceAPI[Any], threads: WorkerThreads
) -> Callable[[Request], Awaitable[Response]]:
    is_async = is_async_callable(api.func)
    decoder = InputDecoder.of(api)

    async def endpoint(request: Request) -> Response:
        # BentoML's request context in its lean form (``enter_request``): the same context
        # variables, without the OpenTelemetry lookups that only tracing reads.
        tokens = enter_request(request)
        ctx = svc.context
        try:
            try:
                value = await decoder.decode(request)
            except ClientError as exc:
                return error_response(exc.status_code, str(exc))
            if api.multi_input:
                args: tuple[Any, ...] = ()
                kwargs = dict(value)
                if api.needs_ctx:
                    kwargs[api.ctx_param] = ctx
            else:
                args, kwargs = ((value, ctx) if api.needs_ctx else (value,)), {}
            try:
                if is_async:
                    output = await api.func(*args, **kwargs)
                else:
                    output = await threads.run(api.func, *args, **kwargs)
                return await api.output.to_http_response(output, ctx if api.needs_ctx else None)
            except BentoMLException as exc:
                status = exc.error_code.value
                logger.error("API %r failed with %s", api.name, exc, exc_info=True)
                if 400 <= status < 500 and status not in (401, 403):
                    return error_response(status, str(exc))
                return JSONResponse("", status_code=status)
            except Exception:
                logger.exception("API %r raised while handling a request", api.name)
                return JSONResponse(_USER_CODE_ERROR, status_code=500)
        finally:
            leave_request(tokens, request.scope)

    endpoint.is_api = True  # type: ignore[attr-defined]
    return endpoint


def service_app(svc: Any) -> Starlette:
    """The service's own app: its routes, its middlewares and its hooks, at ``/``.

    The public ingress (``_ingress.app``) puts the timeout and the guards in front of it.
    """
    ready = False

    async def index(_: Request) -> Response:
        return HTMLResponse(INDEX_HTML)

    async def docs(_: Request) -> Response:
        return JSONResponse(svc.openapi_spec.asdict())

    async def livez(_: Request) -> Response:
        return PlainTextResponse("\n")

    async def readyz(_: Request) -> Response:
        return PlainTextResponse("\n", status_code=200 if ready else 503)

    threads = WorkerThreads(API_THREADS, svc.name)
    routes: list[BaseRoute] = [  # BentoML's order
        Route("/", index, name="home"),
        Route("/docs.json", docs, name="docs"),
        Route("/livez", livez, name="livez"),
        Route("/healthz", livez, name="healthz"),
        Route("/readyz", readyz, name="readyz"),
        # ``/metrics`` is the public ingress's, as for every kind of service.
        Mount("/static_content", StaticFiles(directory=STATIC_CONTENT_DIR), name="static_content"),
        *(
            Route(
                api.route if api.route.startswith("/") else f"/{api.route}",
                _api_endpoint(svc, api, threads),
                name=api.name,
                methods=api.input.HTTP_METHODS,
            )
            for api in svc.apis.values()
        ),
        *(Mount(path, app=mounted, name=name) for mounted, path, name in svc.mount_apps),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal ready
        for hook in [*svc.startup_hooks, svc.on_asgi_app_startup]:
            await call_hook(hook)
        ready = True
        try:
            yield
        finally:
            ready = False
            for hook in [*svc.shutdown_hooks, svc.on_asgi_app_shutdown]:
                await call_hook(hook)

    middleware = [Middleware(cls, **options) for cls, options in svc.middlewares]
    cors = cors_options()
    if cors is not None:  # after the service's own, as in ``bentoml serve``
        middleware.append(Middleware(CORSMiddleware, **cors))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def is_api_route(route: BaseRoute) -> bool:
    """Whether ``route`` is one of the service's APIs (made by ``service_app``)."""
    return isinstance(route, Route) and getattr(route.endpoint, "is_api", False)


async def call_hook(hook: Callable[..., Any]) -> None:
    # BentoML's legacy hooks take no argument; ``with_app_arg`` in BentoML adapts them the same way.
    result = hook()
    if inspect.isawaitable(result):
        await result
