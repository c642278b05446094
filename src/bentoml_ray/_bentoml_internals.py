"""Every BentoML internal that bentoml-ray relies on, in one place.

BentoML has no public hook for swapping a runner's transport, merging runner batches,
serving a legacy service's IO descriptors outside its own server, hosting a 1.2+ service's
HTTP app, or pointing a ``bentoml.depends`` at something other than HTTP, so these few
names come from ``bentoml._internal``, ``_bentoml_sdk`` and ``_bentoml_impl``. Keeping
them here means a BentoML release that moves one breaks exactly one import, with a message
that says so, and ``tests/unit/test_bentoml_internals.py`` fails loudly on it before a user does.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

if TYPE_CHECKING:
    from _bentoml_impl.server.app import ContextMiddleware, ServiceAppFactory

#: Names imported on first use: BentoML's 1.2+ server app brings aiohttp and circus
#: (0.7 s on 2 cores), which a runner-based replica, the hub and Ray Data never need.
_IMPORTED_ON_USE = {
    "ContextMiddleware": "_bentoml_impl.server.app",
    "ServiceAppFactory": "_bentoml_impl.server.app",
}


def _moved(exc: ImportError) -> ImportError:
    return ImportError(
        f"bentoml-ray cannot find a BentoML internal it needs ({exc}); BentoML "
        f"{bentoml.__version__} is installed. Install a BentoML version in bentoml-ray's "
        "supported range (see its pyproject.toml)."
    )


try:
    from _bentoml_impl.serde import ALL_SERDE as SERDES
    from _bentoml_impl.tasks import Sqlite3Store
    from _bentoml_impl.tasks.result import (
        CompletedResultRow,
        ResultRow,
        ResultStatus,
        ResultStore,
    )
    from _bentoml_impl.tasks.serde import JSONSerde
    from _bentoml_sdk import Service as NewService
    from _bentoml_sdk.io_models import ARGS, KWARGS, IORootModel, IterableResponse, is_file_type
    from _bentoml_sdk.service.dependency import Dependency
    from _bentoml_sdk.validators import TensorSchema
    from bentoml._internal.context import (
        ServiceContext,
        _request_var,
        _response_var,
        request_tempdir_pool,
    )
    from bentoml._internal.io_descriptors.file import File
    from bentoml._internal.io_descriptors.image import Image
    from bentoml._internal.io_descriptors.json import JSON
    from bentoml._internal.io_descriptors.numpy import NumpyNdarray
    from bentoml._internal.io_descriptors.pandas import PandasDataFrame
    from bentoml._internal.io_descriptors.text import Text
    from bentoml._internal.runner.container import AutoContainer
    from bentoml._internal.runner.runner import Runner, RunnerMethod
    from bentoml._internal.runner.runner_handle import RunnerHandle
    from bentoml._internal.runner.runner_handle.local import LocalRunnerRef
    from bentoml._internal.server import http_app as _bentoml_http_app
    from bentoml._internal.server.http.access import AccessLogMiddleware
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
    from bentoml._internal.server.http.traffic import MaxConcurrencyMiddleware, TimeoutMiddleware
    from bentoml._internal.service.inference_api import InferenceAPI
    from bentoml._internal.service.service import Service as LegacyService
    from bentoml._internal.utils import get_original_func, is_async_callable
except ImportError as exc:  # pragma: no cover - exercised only by a BentoML that moved them
    raise _moved(exc) from exc


def __getattr__(name: str) -> Any:
    module = _IMPORTED_ON_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise _moved(ImportError(f"{module}.{name}: {exc}")) from exc
    globals()[name] = value  # found directly from now on
    return value


#: The page ``bentoml serve`` shows at ``/``: Swagger UI over ``docs.json``.
INDEX_HTML: str = _bentoml_http_app.DEFAULT_INDEX_HTML

#: Swagger UI's scripts and styles, shipped inside BentoML.
STATIC_CONTENT_DIR: str = os.path.join(
    os.path.dirname(_bentoml_http_app.__file__), "static_content"
)


def bentoml_home() -> str:
    """The BentoML home (store root) this process reads Bentos and models from."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def bento_model_paths(bento: bentoml.Bento) -> dict[bentoml.Tag, pathlib.Path]:
    """The store folders of the BentoML models ``bento`` uses, for shipping it whole.

    ``Bento.info.all_models`` (what ``bentoml export`` bundles) has no public equivalent.
    Models from other registries (Hugging Face) are fetched by BentoML itself at load, and
    models the Bento already bundles travel inside its folder.
    """
    bundled = bento.path_of("models")
    paths: dict[bentoml.Tag, pathlib.Path] = {}
    for model in bento.info.all_models:
        if getattr(model, "registry", "bentoml") != "bentoml":
            continue
        tag = bentoml.Tag.from_taglike(model.tag)
        if os.path.isdir(os.path.join(bundled, tag.name, str(tag.version))):
            continue
        paths[tag] = pathlib.Path(bentoml.models.get(tag).path)
    return paths


def api_server_timeout() -> int | float | None:
    """``api_server.traffic.timeout`` from BentoML's configuration (60 s by default).

    ``bentoml serve`` bounds each request of a runner-based service by it; it is set with
    ``BENTOML_CONFIG`` or ``BENTOML_CONFIG_OPTIONS`` in the API server's environment.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    timeout: int | float | None = BentoMLContainer.api_server_config.traffic.timeout.get()
    return timeout  # as configured: BentoML's 504 message shows it so


def tracing_exporter_type() -> str | None:
    """``tracing.exporter_type`` from BentoML's configuration: None unless tracing is on.

    Without an exporter BentoML's tracer records nothing anywhere, whatever its sample rate.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    exporter = BentoMLContainer.tracing.exporter_type.get()
    return None if exporter is None else str(exporter)


def cors_options() -> dict[str, Any] | None:
    """Starlette ``CORSMiddleware`` options from BentoML's ``http.cors`` configuration.

    None unless CORS is enabled there (``BENTOML_CONFIG`` / ``BENTOML_CONFIG_OPTIONS`` in
    the API server's environment), as ``bentoml serve`` reads it for runner-based services.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    if not BentoMLContainer.http.cors.enabled.get():
        return None
    options: dict[str, Any] = BentoMLContainer.access_control_options.get()
    return options


def request_metrics_config() -> tuple[bool, str, tuple[float, ...]]:
    """Whether BentoML keeps request metrics, their namespace and duration buckets.

    From ``api_server.metrics`` of BentoML's configuration, which a 1.2+ service's own
    ``metrics={...}`` setting fills in (``inject_config``).
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    config = BentoMLContainer.api_server_config.metrics
    buckets = tuple(BentoMLContainer.duration_buckets.get())
    return bool(config.enabled.get()), str(config.namespace.get()), buckets


def resolve_dependency(dependency: Dependency[Any], stand_in: object) -> None:
    """Make every instance's ``bentoml.depends`` attribute return ``stand_in``.

    ``Dependency`` resolves itself once, on first access, and caches the result in
    ``_resolved``; filling that cache first is how a replica swaps BentoML's HTTP client
    for a Ray handle without touching the user's class.
    """
    if not hasattr(dependency, "_resolved"):  # pragma: no cover - a BentoML that changed
        raise ImportError("bentoml.depends() no longer caches its target in _resolved")
    dependency._resolved = stand_in


def prepare_task_store() -> None:
    """Create the SQLite result store of ``@bentoml.task`` APIs if it is not there yet.

    ``bentoml serve`` creates it before its workers start; here each replica does, in the
    node's BentoML home, so replicas of one node share their tasks' results.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    Sqlite3Store.init_db(BentoMLContainer.result_store_file.get())


def runnable_of(local: LocalRunnerRef) -> Any:
    """The runnable instance (the loaded model) a ``LocalRunnerRef`` calls."""
    return local._runnable


def service_instance(factory: ServiceAppFactory) -> Any:
    """The instance of the service's class that a ``ServiceAppFactory`` made at start-up.

    Its API functions (``.local``) are what the factory's own endpoints call.
    """
    return factory._service_instance


def current_request() -> Any | None:
    """The HTTP request BentoML is serving in this context (its ``in_request``), or None."""
    return _request_var.get(None)


#: A request context entered by ``enter_request``: the tokens that ``leave_request`` resets,
#: and the request's response context (``bentoml.Context.response``).
RequestTokens = tuple[Any, Any, Any]


def enter_request(request: Any) -> RequestTokens:
    """BentoML's request context for ``request``, entered in its lean form.

    The same context variables as ``ServiceContext.in_request`` (the request, with its
    ``metadata``, and a fresh response context), so ``bentoml.Context`` and code that reads
    the current request see what they see under ``bentoml serve``; not the request and
    trace IDs in the scope, which only BentoML's tracing and access log read, and which
    cost an OpenTelemetry lookup per request.
    """
    request.metadata = request.headers
    response = ServiceContext.ResponseContext()
    return _request_var.set(request), _response_var.set(response), response


def leave_request(tokens: RequestTokens, scope: Any) -> None:
    """Leave a context ``enter_request`` entered; a temporary directory made in it goes back
    to BentoML's pool, as ``in_request`` does."""
    state = scope.get("state")
    if state and "temp_dir" in state:
        request_tempdir_pool.release(state["temp_dir"])
    _request_var.reset(tokens[0])
    _response_var.reset(tokens[1])


def log_exception(request: Any) -> None:
    """Log the exception being handled, as BentoML's endpoint logs an API's error."""
    _bentoml_http_app.log_exception(request)


def deployment_hooks(service: NewService[Any]) -> list[Callable[[], Any]]:
    """A 1.2+ service's ``@bentoml.on_deployment`` functions, which take no argument."""
    hooks = []
    for attribute in dir(service.inner):
        member = getattr(service.inner, attribute)
        if callable(member) and getattr(member, "__bentoml_deployment_hook__", False):
            hooks.append(member)
    return hooks


def numpy_dtype(descriptor: object) -> np.dtype[Any] | None:
    """The dtype a ``NumpyNdarray`` descriptor declares, or None."""
    dtype = getattr(descriptor, "_dtype", None) if isinstance(descriptor, NumpyNdarray) else None
    return None if dtype is None else np.dtype(dtype)


def numpy_shape(descriptor: NumpyNdarray) -> tuple[int, ...] | None:
    """The shape a ``NumpyNdarray`` descriptor declares (-1: any length), or None."""
    shape = getattr(descriptor, "_shape", None)
    return None if shape is None else tuple(shape)


def json_model(descriptor: JSON) -> type[Any] | None:
    """The pydantic model a ``JSON`` descriptor parses its input into, or None."""
    model: type[Any] | None = getattr(descriptor, "_pydantic_model", None)
    return model


__all__ = [
    "ARGS",
    "INDEX_HTML",
    "JSON",
    "KWARGS",
    "SERDES",
    "STATIC_CONTENT_DIR",
    "AccessLogMiddleware",
    "AutoContainer",
    "CompletedResultRow",
    "ContextMiddleware",
    "Dependency",
    "File",
    "IORootModel",
    "Image",
    "InferenceAPI",
    "IterableResponse",
    "JSONSerde",
    "LegacyService",
    "LocalRunnerRef",
    "MaxConcurrencyMiddleware",
    "NewService",
    "NumpyNdarray",
    "PandasDataFrame",
    "RequestTokens",
    "ResultRow",
    "ResultStatus",
    "ResultStore",
    "Runner",
    "RunnerHandle",
    "RunnerMethod",
    "RunnerTrafficMetricsMiddleware",
    "ServiceAppFactory",
    "TensorSchema",
    "Text",
    "TimeoutMiddleware",
    "api_server_timeout",
    "bento_model_paths",
    "bentoml_home",
    "cors_options",
    "current_request",
    "deployment_hooks",
    "enter_request",
    "get_original_func",
    "is_async_callable",
    "is_file_type",
    "json_model",
    "leave_request",
    "log_exception",
    "numpy_dtype",
    "numpy_shape",
    "prepare_task_store",
    "request_metrics_config",
    "resolve_dependency",
    "runnable_of",
    "service_instance",
    "tracing_exporter_type",
]
