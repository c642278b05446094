"""What a ``bentoml.depends(...)`` attribute is inside a Ray replica: a Ray handle in disguise.

Under ``bentoml serve`` a dependency is a ``RemoteProxy`` that calls the other service over
HTTP. Here each API call is one ``DeploymentHandle`` call to the dependency's deployment,
with the same calling conventions, so the user's code runs unchanged:

- ``dep.api(...)``: awaitable for an ``async def`` API, blocking for a sync one; an async
  iterator or an iterator for a streaming (generator) API;
- ``dep.to_async.api(...)``: always awaitable (or an async iterator);
- ``dep.to_sync.api(...)``: always blocking (or an iterator).

A call waits at most the dependency's ``traffic.timeout`` from when a replica takes it (the
replica enforces it), plus the time a replica may need to start (``CALLEE_START_WAIT_S``),
retries included: a call whose replica dies is sent again to another replica
(``_replica.calls``).
A proxy is made in the replica's constructor, on its event loop (blocking calls go through it).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .._bentoml_internals import get_original_func
from .._defaults import CALLEE_START_WAIT_S, DEPENDENCY_TIMEOUT_S
from .._replica.calls import CallTarget, RetryingCaller
from .._replica.loop_bridge import LoopBridge


class _Calls:
    """One calling convention (``async``, ``sync``, or BentoML's default) for every API."""

    def __init__(self, proxy: ServiceProxy, mode: str) -> None:
        for name, api in proxy.service.apis.items():
            original = get_original_func(api.func)
            streams = inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original)
            is_async = inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original)
            use_async = is_async if mode == "default" else mode == "async"
            call: Callable[..., Any]
            if streams:
                call = proxy.async_stream_call(name) if use_async else proxy.stream_call(name)
            else:
                call = proxy.async_call(name) if use_async else proxy.sync_call(name)
            setattr(self, name, call)


class ServiceProxy:
    """Stands in for a dependency service; its APIs travel over a ``DeploymentHandle``."""

    def __init__(self, service: Any, target: CallTarget) -> None:
        self.service = service
        self._caller = RetryingCaller(target, f"service {service.name!r}")
        self._bridge = LoopBridge()
        traffic = (service.config or {}).get("traffic") or {}
        # BentoML's client adds 1% to the service's timeout, so the service times out first.
        timeout_s = float(traffic.get("timeout") or DEPENDENCY_TIMEOUT_S) * 1.01
        self.timeout_s = timeout_s + CALLEE_START_WAIT_S
        self.to_async = _Calls(self, "async")
        self.to_sync = _Calls(self, "sync")
        self._default = _Calls(self, "default")

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set in __init__: the APIs, in BentoML's default form.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(self._default, name)
        except AttributeError:
            raise AttributeError(
                f"service {self.service.name!r} has no API {name!r}; "
                f"its APIs: {', '.join(self.service.apis) or 'none'}"
            ) from None

    def __repr__(self) -> str:
        return f"<ServiceProxy of {self.service.name!r} over a Ray DeploymentHandle>"

    async def is_ready(self, timeout: int | None = None) -> bool:
        # Ray Serve routes only to replicas whose startup finished.
        return True

    async def close(self) -> None:
        return None

    def async_call(self, name: str) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.wait_for(self._caller.call(name, args, kwargs), self.timeout_s)

        return call

    def sync_call(self, name: str) -> Callable[..., Any]:
        async_call = self.async_call(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._bridge.wait(lambda: async_call(*args, **kwargs))

        return call

    def async_stream_call(self, name: str) -> Callable[..., AsyncIterator[Any]]:
        def call(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return self._caller.stream(name, args, kwargs)

        return call

    def stream_call(self, name: str) -> Callable[..., Iterator[Any]]:
        async_stream_call = self.async_stream_call(name)

        def call(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return self._bridge.iterate(async_stream_call(*args, **kwargs))

        return call
