"""Blocking calls over Ray handles from the threads where a replica runs sync user code.

BentoML runs sync API functions in worker threads, and they call runners and dependency
services synchronously. ``DeploymentResponse.result()`` only works while Ray runs its
router in a loop of its own, which Ray's high-throughput mode turns off. So a blocking
call is instead the async call, run on the replica's event loop and waited for here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEADLOCK = (
    "A blocking call to another deployment was made on the replica's event loop, where it "
    "would wait for itself forever; in async code await the async form instead "
    "(`await dep.to_async.api(...)`, `await runner.method.async_run(...)`)."
)


class LoopBridge:
    """The replica's event loop, captured where it runs (a deployment's constructor)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    def _check_not_on_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self.loop:
            raise RuntimeError(DEADLOCK)

    def wait(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()`` on the replica's loop and block this thread until it is done.

        Timeouts belong to ``call`` itself (a dependency's ``traffic.timeout``).
        """
        self._check_not_on_loop()

        async def run() -> T:
            return await call()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    def iterate(self, chunks: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from this thread, each step on the replica's loop."""
        self._check_not_on_loop()
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(_next(chunks), self.loop).result()
            except StopAsyncIteration:
                return


async def _next(chunks: AsyncIterator[Any]) -> Any:
    return await chunks.__anext__()
