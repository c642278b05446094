"""Worker threads that live as long as the replica, for the sync user code it runs.

BentoML and Starlette run sync code (sync API functions, models) in anyio's worker
threads. anyio ties each worker thread to the task it takes for the root of the running
program and stops the thread when that task ends. A Ray replica's event loop runs with no
such root, so anyio takes the request's own task: every call started a new thread, with
the loop waiting for it to come up, and the thread stopped when the request ended. (In
a review-scorer replica under load, 242 different worker threads showed up in 15 s of
samples.) A ``WorkerThreads`` pool starts its threads once and keeps them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerThreads:
    """At most ``size`` threads, each started on first need and kept; calls beyond wait.

    A call runs in a copy of the caller's context, as with anyio, so context variables
    (BentoML's request context) read the same in the thread. A caller that is cancelled
    stops waiting at once; its call, if already running, finishes in the background (a
    thread cannot be stopped) and holds its thread until then, and if still queued, never
    starts.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
