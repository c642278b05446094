"""Many models behind one API: a service's ``multiplexed`` loader and the request's ``model_id``.

A request names its model with Ray Serve's header ``serve_multiplexed_model_id``. In a Ray
Serve replica a loader is Ray's own model multiplexing (``serve.multiplexed``): an LRU of
models per replica, and a replica that reports the models it holds, so that Ray routes a
request to a replica that already has its model. Anywhere else (``bentoml serve``'s
workers, a Ray Data actor of ``map_api``) it is an LRU of the same size per instance, so
one Bento runs unchanged on both.

The model id of the code running now (``model_id()``) is, first found:

1. the one chosen for a block of code (``for_model``; a batch runs under its calls' id);
2. Ray's request context: set by Ray's proxy from the header, and between deployments by
   the handle call, to which bentoml-ray's calls pass it on (``routing_signals``);
3. the header of the HTTP request BentoML is serving (under ``bentoml serve``, and on a
   Ray mode whose proxy does not read it).

Outside a request it is ``""``: a loader asked for ``""`` answers 400 (``NoModelId``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from ._errors import BentoRayError, InvalidArgument, NoModelId

#: The request header naming the model, as Ray Serve's proxy reads it.
MODEL_ID_HEADER = "serve_multiplexed_model_id"
#: The request header carrying Ray Serve's session id: read, as Ray reads it, once per
#: process (not on every call to a dependency).
SESSION_ID_HEADER = os.environ.get("RAY_SERVE_SESSION_ID_HEADER_KEY", "x-session-id")
#: Set on a loader made by ``multiplexed``: its ``max_models_per_replica``.
MULTIPLEXED_MARK = "__bentoml_ray_multiplexed__"

Loader = TypeVar("Loader", bound=Callable[..., Awaitable[Any]])

#: The model id chosen for the code running now, over the request's (None: not chosen).
_chosen: ContextVar[str | None] = ContextVar("bentoml_ray_model_id", default=None)


def model_id() -> str:
    """The model id of the request being served, or ``""`` if it names none.

    Read it in an API (or a runnable's method) and pass it to a ``multiplexed`` loader.
    Calls made to dependencies and runners while serving the request carry it on.
    """
    found = _model_id_before_headers()
    return found if found is not None else _from_request_headers()[0]


def _model_id_before_headers() -> str | None:
    """The model id chosen for this code, or Ray's; None when only the headers can say."""
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    serve = sys.modules.get("ray.serve")  # not imported: not in a Ray Serve process
    found: str = serve.get_multiplexed_model_id() if serve is not None else ""
    return found or None


def for_model(model_id: str) -> contextlib.AbstractContextManager[None]:
    """Work for ``model_id`` inside the block: ``model_id()`` returns it, calls carry it.

    For a service that picks a dependency's model itself::

        with bentoml_ray.for_model("tenant-b"):
            answer = await self.tenants.predict(x)
    """
    if not isinstance(model_id, str) or not model_id:
        raise InvalidArgument(f"for_model takes a model id, a non-empty string; got {model_id!r}.")
    return running_for(model_id)


@contextlib.contextmanager
def running_for(model_id: str) -> Iterator[None]:
    """``for_model`` for bentoml-ray's own use: ``""`` means no model, whatever Ray says."""
    token = _chosen.set(model_id)
    try:
        yield
    finally:
        _chosen.reset(token)


def routing_signals() -> tuple[str, str]:
    """What a call made now tells Ray's routers: the model id and the session id.

    The session id is the HTTP request's Ray Serve session header (the header Ray's
    ``RAY_SERVE_SESSION_ID_HEADER_KEY`` names); the request's headers are read once.
    """
    model = _model_id_before_headers()
    found_model, session = _from_request_headers()
    return (found_model if model is None else model), session


#: The two headers as ``_from_request_headers`` compares them: ``_`` for ``-``, lower case.
_MODEL_KEY = MODEL_ID_HEADER.lower().replace("-", "_").encode()
_SESSION_KEY = SESSION_ID_HEADER.lower().replace("-", "_").encode()
_KEY_LENGTHS = frozenset((len(_MODEL_KEY), len(_SESSION_KEY)))


def _from_request_headers() -> tuple[str, str]:
    """The model id and session id headers of BentoML's current request (``""`` if absent),
    in one pass; ``-`` and ``_`` alike, as Ray reads them."""
    from ._bentoml_internals import current_request  # here: only a request needs BentoML's

    request = current_request()
    if request is None:
        return "", ""
    model = session = ""
    for key, value in request.scope["headers"]:
        if len(key) in _KEY_LENGTHS:  # the rest cannot match: no copy made of them
            key = key.replace(b"-", b"_")  # ASGI header names are lower-case
            if key == _MODEL_KEY:
                model = value.decode("latin-1")
            elif key == _SESSION_KEY:
                session = value.decode("latin-1")
    return model, session


def multiplexed(max_models_per_replica: int = 3) -> Callable[[Loader], Loader]:
    """Make an async method ``load(self, model_id)`` of a 1.2+ service a model cache.

    Awaiting the decorated method returns the model for ``model_id``, loading it on a miss;
    each replica (or ``bentoml serve`` worker) keeps at most ``max_models_per_replica``
    models, dropping the least recently used. On Ray this is ``serve.multiplexed``, and Ray
    routes a request to a replica that holds its model. An evicted model is released (Ray
    calls its ``__del__`` if it has one; elsewhere its last reference goes).
    """
    limit = max_models_per_replica
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(
            f"max_models_per_replica must be a whole number of at least 1; got {limit!r}."
        )

    def decorate(load: Loader) -> Loader:
        name = getattr(load, "__qualname__", repr(load))
        if not inspect.iscoroutinefunction(load):
            raise BentoRayError(
                f"@bentoml_ray.multiplexed decorates an async loader, and {name} is not "
                "one: define it with `async def` (run a blocking load with "
                "`await asyncio.to_thread(...)`)."
            )
        parameters = list(inspect.signature(load).parameters)
        if len(parameters) != 2:
            raise BentoRayError(
                f"@bentoml_ray.multiplexed decorates a method load(self, model_id); {name} "
                f"takes ({', '.join(parameters)})."
            )
        slot = f"__bentoml_ray_models_{load.__name__}"

        @functools.wraps(load)
        async def get_model(self: Any, model_id: str) -> Any:
            if not isinstance(model_id, str) or not model_id:
                raise NoModelId(
                    f"This API serves many models and the request named none: send its id "
                    f"in the header {MODEL_ID_HEADER!r}."
                )
            models = self.__dict__.get(slot)
            if models is None:
                models = self.__dict__[slot] = _model_cache(self, load, limit)
            return await models.get(model_id)

        setattr(get_model, MULTIPLEXED_MARK, limit)
        return get_model  # type: ignore[return-value]

    return decorate


def _model_cache(instance: Any, load: Callable[..., Awaitable[Any]], limit: int) -> Any:
    deployment = _replica_deployment()
    if deployment is None:
        return _LocalModels(instance, load, limit)
    return _RayModels(instance, load, limit, deployment)


def _replica_deployment() -> str | None:
    """The deployment of the Ray Serve replica this runs in, or None outside one."""
    if "ray.serve" not in sys.modules:  # never imported: not a Ray Serve process
        return None
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return str(serve.get_replica_context().deployment)
    except RayServeException:
        return None


class _LocalModels:
    """An LRU of models, loaded one at a time, as Ray's multiplexing keeps them."""

    def __init__(self, instance: Any, load: Callable[..., Awaitable[Any]], limit: int) -> None:
        self._instance, self._load, self._limit = instance, load, limit
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._loading = asyncio.Lock()

    async def get(self, model_id: str) -> Any:
        if model_id in self._models:
            self._models.move_to_end(model_id)
            return self._models[model_id]
        async with self._loading:
            if model_id not in self._models:  # loaded while this call waited
                if len(self._models) >= self._limit:
                    self._models.popitem(last=False)
                self._models[model_id] = await self._load(self._instance, model_id)
            return self._models[model_id]


class _RayModels:
    """Ray Serve's multiplexing of the loader, with the loads and evictions counted.

    Ray keeps the models; ``_held`` follows its LRU (the same rule, applied at the same
    points: a hit moves a model last, a load first drops the oldest of a full cache) so
    the metrics can say which models this replica holds.
    """

    def __init__(
        self, instance: Any, load: Callable[..., Awaitable[Any]], limit: int, deployment: str
    ) -> None:
        from ray import serve

        self._held: OrderedDict[str, None] = OrderedDict()
        metrics = _ModelMetrics(deployment)

        async def load_one(model_id: str) -> Any:  # Ray calls it on a miss, under its lock
            if len(self._held) >= limit:
                metrics.evicted(self._held.popitem(last=False)[0])
            started = time.perf_counter()
            model = await load(instance, model_id)
            metrics.loaded(model_id, time.perf_counter() - started)
            self._held[model_id] = None
            return model

        self._get = serve.multiplexed(max_num_models_per_replica=limit)(load_one)

    async def get(self, model_id: str) -> Any:
        if model_id in self._held:
            self._held.move_to_end(model_id)
        return await self._get(model_id)


class _ModelMetrics:
    """A replica's model loads, load times, evictions and held models, in its registry.

    The replica's registry reaches ``/metrics`` (summed over replicas; the held models
    per replica) and Ray's metrics (``_replica.ray_metrics``).
    """

    _families: tuple[Any, Any, Any, Any] | None = None

    def __init__(self, deployment: str) -> None:
        if _ModelMetrics._families is None:
            import prometheus_client as prom

            _ModelMetrics._families = (
                prom.Counter("bentoml_ray_model_loads", "Models loaded.", ["service"]),
                prom.Histogram(
                    "bentoml_ray_model_load_seconds", "Time to load a model.", ["service"]
                ),
                prom.Counter("bentoml_ray_model_evictions", "Models evicted.", ["service"]),
                prom.Gauge(
                    "bentoml_ray_model_held",
                    "1 for each model the replica holds.",
                    ["service", "model_id"],
                ),
            )
        loads, load_seconds, evictions, held = _ModelMetrics._families
        self._held: Any = held
        self._service = deployment
        self._loads = loads.labels(deployment)
        self._load_seconds = load_seconds.labels(deployment)
        self._evictions = evictions.labels(deployment)

    def loaded(self, model_id: str, seconds: float) -> None:
        self._loads.inc()
        self._load_seconds.observe(seconds)
        self._held.labels(self._service, model_id).set(1)

    def evicted(self, model_id: str) -> None:
        self._evictions.inc()
        with contextlib.suppress(KeyError):
            self._held.remove(self._service, model_id)


def multiplexed_loaders(cls: type) -> list[str]:
    """The names of ``cls``'s methods (its own or inherited) that ``multiplexed`` made."""
    return sorted(
        {
            name
            for klass in cls.__mro__
            for name, value in vars(klass).items()
            if hasattr(value, MULTIPLEXED_MARK)
        }
    )
