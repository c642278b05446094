"""A 1.2+ API's HTTP endpoint, planned once when the service starts.

BentoML's endpoint (``ServiceAppFactory.api_endpoint``, inside ``api_endpoint_wrapper``)
decides per request what never changes while the replica lives: a dozen function-local
imports, the serde, the kind of the API function (``inspect`` calls), the input model's
field names (read from the instance, which raises a pydantic deprecation warning), and
for a root-typed input model a JSON schema that pydantic builds afresh to learn whether
the body is JSON at all. Its request context also looks up OpenTelemetry's request and
trace IDs, which only tracing reads. Here that is decided once per API (``plan``), and a
request does only its own work: read the body, validate it, call, render.

The plan covers the common case: a JSON body (or any media type BentoML decodes as
JSON), no ``ctx`` parameter, no file fields in the input or the output. Anything else,
and any request the plan's own steps fail on, goes to BentoML's endpoint, which then
answers as it always does: a body that fails validation is validated again there, so its
400 (or BentoML's 500 for a body that is not JSON) is BentoML's own. Errors the API
function raises are answered as BentoML's endpoint answers them. A generator API's chunks
are pumped straight into the answer (BentoML passes them through two generators of its
own). Outputs other than a JSON model or a NumPy array (a ``Response``, text, a generator
returned by a plain function, an unusual value) are rendered by BentoML's
``to_http_response``.
``tests/unit/test_service_endpoint.py`` sends the same requests both ways and compares
status, headers and body bytes.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import typing
from collections.abc import AsyncGenerator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .._bentoml_internals import (
    ARGS,
    KWARGS,
    SERDES,
    IORootModel,
    IterableResponse,
    TensorSchema,
    enter_request,
    get_original_func,
    is_file_type,
    leave_request,
    log_exception,
)

if TYPE_CHECKING:
    from .app_factory import RayServiceAppFactory

#: Root types whose values render as JSON, never as text: BentoML's test of whether a root
#: output renders as text (a ``model_dump`` per answer) is needed only for the others
#: (NumPy arrays render as JSON too: ``_renders_as_json``).
_JSON_ROOTS = (list, dict, tuple, set, frozenset, int, float, bool)

#: The logger BentoML reports an error in the middle of a stream to.
_stream_logger = logging.getLogger("bentoml.serve")

# Media types BentoML decodes otherwise than as JSON (multipart, pickle, Arrow, ...).
_OTHER_MEDIA_TYPES = frozenset(
    media_type for media_type, serde in SERDES.items() if serde is not SERDES["application/json"]
)

_UNEXPECTED = {"error": "An unexpected error has occurred, please check the server log."}


class CompiledEndpoint:
    """One API's endpoint, as an ASGI app for the ingress's direct path."""

    @classmethod
    def plan(cls, factory: RayServiceAppFactory, name: str) -> CompiledEndpoint | None:
        """The endpoint of ``factory``'s API ``name``, or None where BentoML's must serve."""
        method = factory.service.apis[name]
        func = get_original_func(method.func)
        input_spec, output_spec = method.input_spec, method.output_spec
        if method.ctx_param is not None or input_spec.multipart_fields:
            return None
        if output_spec.multipart_fields and not (
            inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func)
        ):
            return None
        return cls(factory, name)

    def __init__(self, factory: RayServiceAppFactory, name: str) -> None:
        method = factory.service.apis[name]
        self._factory = factory
        self._name = name
        self._batchable = bool(method.batchable)
        original = get_original_func(method.func)
        self._streams = inspect.isasyncgenfunction(original)
        self._streams_in_thread = inspect.isgeneratorfunction(original)
        self._input = method.input_spec
        self._root_input = bool(getattr(self._input, "__root_input__", False))
        # A root input model of a string (or file) type reads the body as it is, not as JSON.
        self._raw_root = self._root_input and self._input.model_json_schema().get("type") in (
            "string",
            "file",
        )
        self._fields = tuple(self._input.model_fields)
        self._output = method.output_spec
        self._root_output = issubclass(self._output, IORootModel)
        self._json_root_output = self._root_output and _renders_as_json(
            self._output.model_fields["root"]
        )
        self._serde = SERDES["application/json"]()
        self._bentoml = functools.partial(factory.api_endpoint_wrapper, name)
        self._context = factory.service.context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        media_type = request.headers.get("Content-Type", "application/json")
        if media_type.split(";")[0].strip() in _OTHER_MEDIA_TYPES:
            await self._through_bentoml(request, scope, receive, send)
            return
        tokens = enter_request(request)
        try:
            try:
                arguments = self._arguments(await request.body())
            except Exception:
                arguments = None  # BentoML's endpoint answers it, as it always does
            if arguments is not None:
                try:
                    response = await self._answer(*arguments)
                except Exception as exc:
                    response = _error_response(exc, request)
                self._factory._add_response_headers(response)
                # Tasks the API added to ``bentoml.Context.response.background`` run after
                # the answer, with the response's own, as BentoML's endpoint runs them.
                background = tokens[2].background
                if background.tasks:
                    if response.background is not None:
                        background.tasks.append(response.background)
                    response.background = background
                await response(scope, receive, send)
        finally:
            leave_request(tokens, scope)
        if arguments is None:
            await self._through_bentoml(request, scope, receive, send)

    async def _through_bentoml(
        self, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """BentoML's endpoint, in BentoML's request context, for the same request (its body,
        if read, is kept by the request object)."""
        with self._context.in_request(request):
            response = await self._bentoml(request)
            await response(scope, receive, send)

    def _arguments(self, body: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The API function's arguments from the request body, as BentoML's endpoint makes
        them (the same validation: pydantic's, of the same model)."""
        spec: Any = self._input
        if self._root_input:
            if issubclass(spec, IORootModel):
                data = body or b"{}"
                parsed = data if self._raw_root else json.loads(data)
                return (spec.model_validate(parsed).root,), {}
            return (spec.model_validate_json(body or b"{}"),), {}
        model = spec.model_validate_json(body or b"{}")
        kwargs = {field: getattr(model, field) for field in self._fields}
        args: tuple[Any, ...] = ()
        if ARGS in kwargs:
            args = (kwargs.pop(ARGS),)
        if KWARGS in kwargs:
            kwargs.update(kwargs.pop(KWARGS))
        return args, kwargs

    async def _answer(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Response:
        factory, name = self._factory, self._name
        if self._batchable:
            output = await factory.batch_infer(name, args, kwargs)
        elif self._streams:  # its chunks straight from the API's own generator
            return await self._stream(factory._local_api(name)[0](*args, **kwargs))
        elif self._streams_in_thread:  # each chunk made in the service's threads
            return await self._stream(factory.stream_api(name, args, kwargs))
        else:
            output = await factory._run_api(name, args, kwargs)
        if isinstance(output, Response):
            return output
        if inspect.isgenerator(output) or inspect.isasyncgen(output):
            payload = None  # a stream: BentoML renders it
        elif self._json_root_output:
            fits = not isinstance(output, IORootModel) and not is_file_type(type(output))
            payload = self._serde.serialize_model(self._output(output)) if fits else None
        elif not self._root_output and isinstance(output, BaseModel):
            payload = self._serde.serialize_model(output)
        else:
            payload = None
        if payload is None:  # text, files, images, streams, an unusual value: BentoML's
            rendered: Response = await self._output.to_http_response(output, self._serde)
            return rendered
        return IterableResponse(  # type: ignore[no-any-return]
            content=payload.data, media_type=self._output.mime_type(), headers=payload.headers
        )

    async def _stream(self, chunks: AsyncGenerator[Any, None]) -> Response:
        """The API's chunks pumped straight into the answer, as BentoML streams them: an
        error before the first chunk is the answer's error; one after it ends the stream,
        logged."""
        try:
            first = [await chunks.__anext__()]
        except StopAsyncIteration:
            first = []
        return StreamingResponse(self._pump(first, chunks), media_type=self._output.mime_type())

    async def _pump(
        self, first: list[Any], chunks: AsyncGenerator[Any, None]
    ) -> AsyncGenerator[str | bytes, None]:
        root, output, serde = self._root_output, self._output, self._serde
        try:
            for item in first:
                for data in _encoded(item, root, output, serde):
                    yield data
            async for item in chunks:
                if isinstance(item, (str, bytes)):
                    yield item
                else:
                    for data in _encoded(item, root, output, serde):
                        yield data
        except Exception:
            _stream_logger.exception("Error while streaming response")


def _encoded(item: Any, root: bool, output: Any, serde: Any) -> Any:
    """One streamed item's bytes, as BentoML encodes it: text and bytes as they are."""
    if isinstance(item, (str, bytes)):
        return (item,)
    return serde.serialize_model(output(item) if root else item).data


def _renders_as_json(root: FieldInfo) -> bool:
    """Whether a root output field's values always render as JSON, never as text.

    A NumPy array does too: BentoML's tensor serializer hands ``model_dump`` the array
    itself (``TensorSchema.encode``), never a string.
    """
    if root.annotation is np.ndarray and any(
        isinstance(meta, TensorSchema) and meta.format == "numpy-array" for meta in root.metadata
    ):
        return True
    return _json_type(root.annotation)


def _json_type(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    if origin is typing.Annotated:
        return _json_type(typing.get_args(annotation)[0])
    return isinstance(origin, type) and (
        issubclass(origin, _JSON_ROOTS) or issubclass(origin, BaseModel)
    )


def _error_response(exc: Exception, request: Request) -> Response:
    """An API function's error, answered as BentoML's ``api_endpoint_wrapper`` answers it."""
    log_exception(request)
    if isinstance(exc, ValidationError):
        data = {
            "error": f"{exc.error_count()} validation error for {exc.title}",
            "detail": exc.errors(include_context=False, include_input=False),
        }
        return JSONResponse(data, status_code=400)
    if isinstance(exc, BentoMLException):
        status = exc.error_code.value
        detail: Any
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            detail = {"error": "Authorization error"}
        elif status >= 500:
            detail = _UNEXPECTED
        else:
            detail = ({"error": str(exc)},)  # BentoML answers a one-item list here
        return JSONResponse(detail, status_code=status)
    return JSONResponse(_UNEXPECTED, status_code=500)
