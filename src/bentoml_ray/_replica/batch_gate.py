"""``serve.batch`` that forms its next batch while the model is busy, not before.

Ray Serve's batcher closes a batch as soon as ``batch_wait_timeout_s`` has passed since its
first call, and only then waits for a free slot (``max_concurrent_batches``). So calls that
arrive while the model runs each close a batch of their own at once, and the model then
works through a queue of tiny batches: with a short wait, 64 concurrent callers got
batches of one or two. ``BatchGate`` holds new calls while a batch executes and lets them
all in when it ends, so the next batch holds everyone who waited (BentoML's own batcher
works this way: it sends when the model is free). At light load nothing waits.

The gate applies with one batch at a time (Ray's default); with ``max_concurrent_batches``
above one, calls go straight to Ray as they come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._multiplexing import model_id, running_for

CallT = TypeVar("CallT")


class BatchGate:
    """Closed while a batch executes; waiting calls enter together when it opens."""

    def __init__(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    async def admit(self) -> None:
        if not self._idle.is_set():
            await self._idle.wait()

    async def execute(self, batch: Awaitable[list[Any]]) -> list[Any]:
        self._idle.clear()
        try:
            return await batch
        finally:
            self._idle.set()


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
    gate = BatchGate()

    async def execute(calls: list[tuple[str, CallT]]) -> list[Any]:
        return await gate.execute(run_by_model(calls))

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
