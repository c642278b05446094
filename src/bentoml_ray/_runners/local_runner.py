"""A runner whose model runs in this process: BentoML's local transport, ``serve.batch`` first.

Two places run a runner's model, and both use this handle: a ``RunnerDeployment`` replica,
and the API server's own replica for an *embedded* runner (``Runner(embedded=True)`` in the
Bento, or ``embedded: true`` in its options), where a runner call is a plain method call
with no handle hop. Methods that the ``BatchingPlan`` names go through ``serve.batch``
(behind a ``BatchGate``). As with BentoML's ``LocalRunnerRef``, async callers get one model
call at a time per replica and sync callers run it in their own thread.

One change from BentoML: a model call that is short runs inline, on the replica's event
loop, instead of in a worker thread; for a small model the thread hop costs more than the
model. ``CallPlacement`` decides, per method, from how its recent calls went.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._bentoml_internals import LocalRunnerRef, Runner, RunnerHandle, RunnerMethod, runnable_of
from .._defaults import RUNNER_PLACEMENT
from .._replica.batch_gate import gated_batch
from .._replica.batch_merge import Call, merge_calls, split_result
from .._replica.loop_bridge import LoopBridge
from .._replica.worker_threads import WorkerThreads
from .call_placement import CallPlacement, Placement, PlacementCounters

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")
R = TypeVar("R")


class LocalRunnerHandle(RunnerHandle):
    def __init__(
        self,
        runner: Runner,
        batching: Mapping[str, Mapping[str, Any]],
        placement: Placement = RUNNER_PLACEMENT,
    ) -> None:
        self._name, self._placement = runner.name, placement
        self._local = LocalRunnerRef(runner)  # instantiates the runnable: loads the model
        self._runnable = runnable_of(self._local)
        # One model call at a time for async callers, as BentoML. An inline call never
        # awaits, so it cannot overlap another inline call; the lock is held only while a
        # call runs in the worker thread, and only then do calls queue. (anyio's limiter,
        # used before, yields while holding its token, so once a queue formed every new
        # call joined it and under load it never drained: 0.6x the throughput.)
        self._one_at_a_time = asyncio.Lock()
        # The model's own worker thread: the API functions' threads can all be taken by
        # sync API functions blocked on this very model (``LoopBridge``).
        self._thread = WorkerThreads(1, runner.name)
        # Each method's bound function, looked up once (BentoML builds a new one per lookup),
        # and where its calls run; no placement for an async method: BentoML runs those.
        self._methods: dict[str, tuple[Callable[..., Any], CallPlacement | None]] = {}
        self._batched: dict[str, Callable[[Call], Awaitable[Any]]] = {
            name: gated_batch(
                dict(options), self._batch_function(getattr(runner, name)), f"{runner.name}.{name}"
            )
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
        known = self._methods.get(method.name)
        if known is None:
            bound = getattr(self._runnable, method.name)
            placement = None
            if not inspect.iscoroutinefunction(bound):
                counters = PlacementCounters.for_method(self._name, method.name)
                placement = CallPlacement(self._placement, counters)
            known = self._methods[method.name] = (bound, placement)
        function: Callable[..., R] = known[0]
        placement = known[1]
        if placement is None:  # BentoML's own path, unchanged
            return await self._local.async_run_method(method, *args, **kwargs)

        if placement.inline and not self._one_at_a_time.locked():
            return self._run_inline(placement, function, args, kwargs)  # no await at all
        await self._one_at_a_time.acquire()
        if placement.inline:  # decided when its turn has come
            try:
                return self._run_inline(placement, function, args, kwargs)
            finally:
                self._one_at_a_time.release()
        return await self._run_in_thread(placement, function, args, kwargs)

    async def _run_in_thread(
        self,
        placement: CallPlacement,
        function: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """The call in the worker thread, the lock held until the thread is done.

        A cancelled caller (its client left) stops waiting at once, but a thread cannot be
        stopped: the lock is released when the model call really ends, not before.
        """
        timing: list[float] = []

        def in_thread() -> R:
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                timing[:] = [time.perf_counter() - start, time.thread_time() - start_cpu]

        def finished(call: asyncio.Future[R]) -> None:
            self._one_at_a_time.release()
            if timing:
                placement.record_thread(*timing)
            if not call.cancelled():
                call.exception()  # seen: a caller that left must not leave it unretrieved

        call = asyncio.ensure_future(self._thread.run(in_thread))
        call.add_done_callback(finished)
        return await asyncio.shield(call)

    @staticmethod
    def _run_inline(
        placement: CallPlacement,
        function: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            placement.record_inline(time.perf_counter() - start, time.thread_time() - start_cpu)

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
