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
    options: dict[str, Any], run_batch: Callable[[list[CallT]], Awaitable[list[Any]]]
) -> Callable[[CallT], Awaitable[Any]]:
    """``serve.batch(**options)`` over ``run_batch``, behind a ``BatchGate`` when it helps."""
    from ray import serve  # here: a process that batches nothing (Ray Data's) never pays for it

    if options.get("max_concurrent_batches", 1) != 1:
        return serve.batch(**options)(run_batch)  # type: ignore[arg-type, no-any-return]
    gate = BatchGate()

    async def execute(calls: list[CallT]) -> list[Any]:
        return await gate.execute(run_batch(calls))

    batched = serve.batch(**options)(execute)

    async def call(value: CallT) -> Any:
        await gate.admit()
        return await batched(value)

    return call
