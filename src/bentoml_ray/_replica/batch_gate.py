"""``serve.batch`` that forms its next batch while the model is busy, not before.

Ray Serve's batcher closes a batch as soon as ``batch_wait_timeout_s`` has passed since its
first call, and only then waits for a free slot (``max_concurrent_batches``). So calls that
arrive while the model runs each close a batch of their own at once, and the model then
works through a queue of tiny batches: with a short wait, 64 concurrent callers got
batches of one or two. ``BatchGate`` holds new calls while a batch executes and lets them
all in when it ends, so the next batch holds everyone who waited (BentoML's own batcher
works this way: it sends when the model is free). At light load nothing waits. After a
batch, the gate also waits a little for the callers it answered (``BatchGate``).

The gate applies with one batch at a time (Ray's default); with ``max_concurrent_batches``
above one, calls go straight to Ray as they come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._multiplexing import model_id, running_for

CallT = TypeVar("CallT")


#: How long, at most, a gate stays closed after a batch to let the callers it answered come
#: back: this share of the batch's run time, and never more than ``REFILL_MAX_S``.
REFILL_SHARE = 0.25
REFILL_MAX_S = 0.05


class BatchGate:
    """Closed while a batch executes; waiting calls enter together when it opens.

    Under steady load callers split into cohorts: those a batch answered come back while
    the next batch runs, so each batch holds part of them, and a model with a fixed cost
    per batch runs more batches than it needs. (The vector benchmark's batches held 37
    calls on average at 64 connections, where a hand-written ``serve.batch`` with a 100 ms
    wait held 64, and served 0.6 of its requests.) So when a batch ends, the gate waits
    for as many calls as were in flight (the batch's and those waiting, up to
    ``max_batch_size``), and opens as soon as they are there, or after ``REFILL_SHARE`` of
    the batch's run time at most. At light load the one caller opens it on arrival.
    """

    def __init__(self, max_batch_size: int) -> None:
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_batch_size = max_batch_size
        self._waiting = 0  # calls held at the gate
        self._want = 0  # calls to wait for before opening, while held after a batch
        self._timer: asyncio.TimerHandle | None = None

    async def admit(self) -> None:
        if self._idle.is_set():
            return
        self._waiting += 1
        try:
            if self._want and self._waiting >= self._want:
                self._open()
            else:
                await self._idle.wait()
        finally:
            self._waiting -= 1

    async def execute(self, batch: Awaitable[list[Any]], size: int) -> list[Any]:
        self._hold_no_more()
        self._idle.clear()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await batch
        finally:
            want = min(self._max_batch_size, size + self._waiting)
            if self._waiting >= want:
                self._open()
            else:
                self._want = want
                hold = min((loop.time() - started) * REFILL_SHARE, REFILL_MAX_S)
                self._timer = loop.call_later(hold, self._open)

    def _open(self) -> None:
        self._hold_no_more()
        self._idle.set()

    def _hold_no_more(self) -> None:
        self._want = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def gated_batch(
    options: dict[str, Any],
    run_batch: Callable[[list[CallT]], Awaitable[list[Any]]],
    name: str,
) -> Callable[[CallT], Awaitable[Any]]:
    """``serve.batch(**options)`` over ``run_batch``, behind a ``BatchGate`` when it helps.

    A batch never mixes model ids: ``run_batch`` sees the calls of one model at a time,
    with ``model_id()`` returning theirs (Ray groups batches by model id only from 2.54).
    The calls each batch joins are counted in ``bentoml_ray_batch_size{function=name}``.
    """
    from ray import serve  # here: a process that batches nothing (Ray Data's) never pays for it

    sizes = _batch_sizes().labels(name)

    async def run_by_model(calls: list[tuple[str, CallT]]) -> list[Any]:
        sizes.observe(len(calls))
        return await by_model(calls, run_batch)

    if options.get("max_concurrent_batches", 1) != 1:
        ungated = serve.batch(**options)(run_by_model)

        async def call_ungated(value: CallT) -> Any:
            return await ungated((model_id(), value))  # type: ignore[arg-type]

        return call_ungated
    gate = BatchGate(int(options.get("max_batch_size", 10)))  # 10: serve.batch's default

    async def execute(calls: list[tuple[str, CallT]]) -> list[Any]:
        return await gate.execute(run_by_model(calls), len(calls))

    batched = serve.batch(**options)(execute)

    async def call(value: CallT) -> Any:
        await gate.admit()
        return await batched((model_id(), value))  # type: ignore[arg-type]

    return call


async def by_model(
    calls: list[tuple[str, CallT]], run_batch: Callable[[list[CallT]], Awaitable[list[Any]]]
) -> list[Any]:
    """``run_batch`` over each model id's calls, under that id; the results in call order."""
    first = calls[0][0]
    if all(model == first for model, _ in calls):
        with running_for(first):
            return await run_batch([value for _, value in calls])
    positions: dict[str, list[int]] = {}
    for position, (model, _) in enumerate(calls):
        positions.setdefault(model, []).append(position)
    results: list[Any] = [None] * len(calls)
    for model, indexes in positions.items():
        with running_for(model):
            answers = await run_batch([calls[index][1] for index in indexes])
        for index, answer in zip(indexes, answers, strict=True):
            results[index] = answer
    return results


_BATCH_SIZES: Any = None


def _batch_sizes() -> Any:
    """The replica's histogram of batch sizes (calls per batch), made on first use: it
    reaches ``/metrics`` and Ray's metrics, so a benchmark sees how batches formed."""
    global _BATCH_SIZES
    if _BATCH_SIZES is None:
        import prometheus_client as prom

        _BATCH_SIZES = prom.Histogram(
            "bentoml_ray_batch_size",
            "Calls joined in one batch of a batchable runner method or API.",
            ["function"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
    return _BATCH_SIZES
