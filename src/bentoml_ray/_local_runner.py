"""A runner whose model runs in this process: BentoML's local transport, ``serve.batch`` first.

Two places run a runner's model, and both use this handle: a ``RunnerDeployment`` replica,
and the API server's own replica for an *embedded* runner (``Runner(embedded=True)`` in the
Bento, or ``embedded: true`` in its options), where a runner call is a plain method call
with no handle hop. Methods that the ``BatchingPlan`` names go through ``serve.batch``
(behind a ``BatchGate``); everything else is BentoML's ``LocalRunnerRef`` unchanged: one
model call at a time per replica for async callers, the caller's thread for sync ones.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._batch_gate import gated_batch
from ._batching import Call, merge_calls, split_result
from ._bentoml_internals import LocalRunnerRef, Runner, RunnerHandle, RunnerMethod
from ._loop_bridge import LoopBridge

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")
R = TypeVar("R")


class LocalRunnerHandle(RunnerHandle):
    def __init__(self, runner: Runner, batching: Mapping[str, Mapping[str, Any]]) -> None:
        self._local = LocalRunnerRef(runner)  # instantiates the runnable: loads the model
        self._batched: dict[str, Callable[[Call], Awaitable[Any]]] = {
            name: gated_batch(dict(options), self._batch_function(getattr(runner, name)))
            for name, options in batching.items()
        }
        # Sync callers of a batched method join the batches on the replica's loop.
        self._bridge = LoopBridge() if self._batched else None

    async def is_ready(self, timeout: int) -> bool:
        return True

    def run_method(
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        if self._bridge is not None and method.name in self._batched:
            return self._bridge.wait(lambda: self.async_run_method(method, *args, **kwargs))
        return self._local.run_method(method, *args, **kwargs)

    async def async_run_method(
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        batched = self._batched.get(method.name)
        if batched is not None:
            result: R = await batched((args, kwargs))
            return result
        return await self._local.async_run_method(method, *args, **kwargs)

    def async_stream_method(  # type: ignore[override]
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[R, None]:
        return self._local.async_stream_method(method, *args, **kwargs)

    def _batch_function(
        self, method: RunnerMethod[Any, Any, Any]
    ) -> Callable[[list[Call]], Coroutine[Any, Any, list[Any]]]:
        in_dim, out_dim = method.config.batch_dim
        local = self._local

        async def run_batch(calls: list[Call]) -> list[Any]:
            merged = merge_calls(calls, in_dim) if len(calls) > 1 else None
            if merged is None:  # one call, or calls whose shapes cannot be merged
                return [await local.async_run_method(method, *a, **kw) for a, kw in calls]
            (args, kwargs), offsets = merged
            merged_result = await local.async_run_method(method, *args, **kwargs)
            return split_result(merged_result, offsets, out_dim)

        return run_batch
