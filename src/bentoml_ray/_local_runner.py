"""A runner whose model runs in this process: BentoML's local transport, ``serve.batch`` first.

Two places run a runner's model, and both use this handle: a ``RunnerDeployment`` replica,
and the API server's own replica for an *embedded* runner (``Runner(embedded=True)`` in the
Bento, or ``embedded: true`` in its options), where a runner call is a plain method call
with no handle hop. Methods that the ``BatchingPlan`` names go through ``serve.batch``
(behind a ``BatchGate``). As with BentoML's ``LocalRunnerRef``, async callers get one model
call at a time per replica and sync callers run it in their own thread.

One change from BentoML: a model call that lately took under ``INLINE_BELOW_S`` runs
inline, on the replica's event loop, instead of in a worker thread. For a small model the
thread hop (a thread wake-up and two GIL hand-offs) costs more than the model: the iris
example ran 2.5x faster inline. A call that turns out slow sends the next ones back to
the thread at once, so a big model never holds the loop for long.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._batch_gate import gated_batch
from ._batching import Call, merge_calls, split_result
from ._bentoml_internals import LocalRunnerRef, Runner, RunnerHandle, RunnerMethod, runnable_of
from ._loop_bridge import LoopBridge

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")
R = TypeVar("R")


#: Model calls expected to take less than this run inline on the event loop. The hop to a
#: worker thread and back costs about 1 ms on a busy 2-core machine.
INLINE_BELOW_S = 0.001


class CallDuration:
    """How long one runner method's calls take lately, to pick inline or a worker thread.

    A slower call than the estimate counts at once; a faster one pulls it halfway down, so
    a method that is slow every time stays in the thread while one call delayed by the
    machine (a preemption, a GC pause) sends only the next few there. Unknown at first:
    the first call runs in the thread.
    """

    def __init__(self) -> None:
        self.estimate = math.inf

    def record(self, seconds: float) -> None:
        if seconds >= self.estimate or self.estimate == math.inf:
            self.estimate = seconds
        else:
            self.estimate = (self.estimate + seconds) / 2

    @property
    def short(self) -> bool:
        return self.estimate < INLINE_BELOW_S


class LocalRunnerHandle(RunnerHandle):
    def __init__(self, runner: Runner, batching: Mapping[str, Mapping[str, Any]]) -> None:
        self._local = LocalRunnerRef(runner)  # instantiates the runnable: loads the model
        self._runnable = runnable_of(self._local)
        self._limiter = anyio.CapacityLimiter(1)  # one model call at a time, as BentoML
        self._durations: dict[str, CallDuration] = {}  # sync methods only
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
        return await self._run(method, *args, **kwargs)

    async def _run(self, method: RunnerMethod[Any, P, R], *args: Any, **kwargs: Any) -> R:
        function = getattr(self._runnable, method.name)
        duration = self._durations.get(method.name)
        if duration is None:
            if inspect.iscoroutinefunction(function):  # BentoML's own path, unchanged
                return await self._local.async_run_method(method, *args, **kwargs)
            duration = self._durations[method.name] = CallDuration()

        def timed() -> R:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)  # type: ignore[no-any-return]
            finally:
                duration.record(time.perf_counter() - start)

        if duration.short:
            if self._limiter.borrowed_tokens == 0:
                return timed()  # nothing else runs the model now: no await at all
            async with self._limiter:  # after the calls ahead of it, one at a time
                return timed()
        return await anyio.to_thread.run_sync(timed, limiter=self._limiter)

    def async_stream_method(  # type: ignore[override]
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[R, None]:
        return self._local.async_stream_method(method, *args, **kwargs)

    def _batch_function(
        self, method: RunnerMethod[Any, Any, Any]
    ) -> Callable[[list[Call]], Coroutine[Any, Any, list[Any]]]:
        in_dim, out_dim = method.config.batch_dim
        run = self._run

        async def run_batch(calls: list[Call]) -> list[Any]:
            merged = merge_calls(calls, in_dim) if len(calls) > 1 else None
            if merged is None:  # one call, or calls whose shapes cannot be merged
                return [await run(method, *a, **kw) for a, kw in calls]
            (args, kwargs), offsets = merged
            merged_result = await run(method, *args, **kwargs)
            return split_result(merged_result, offsets, out_dim)

        return run_batch
