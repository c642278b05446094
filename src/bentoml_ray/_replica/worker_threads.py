"""Worker threads that live as long as the replica, for the sync user code it runs.

BentoML and Starlette run sync code (sync API functions, models) in anyio's worker
threads. anyio ties each worker thread to the task it takes for the root of the running
program and stops the thread when that task ends. A Ray replica's event loop runs with no
such root, so anyio takes the request's own task: every call started a new thread, with
the loop waiting for it to come up, and the thread stopped when the request ended. (In
a review-scorer replica under load, 242 different worker threads showed up in 15 s of
samples.) ``WorkerThreads`` starts its threads once and keeps them, and otherwise
behaves as anyio's ``to_thread.run_sync`` with a ``CapacityLimiter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: One call for a worker: where to report, and what to run.
Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]


class WorkerThreads:
    """Runs at most ``size`` calls at a time, each in a thread that is kept for the next.

    As with anyio's limiter, a caller that is cancelled (its client left, or the traffic
    timeout passed) stops waiting at once and frees its place for the next call, while its
    call, if already running, finishes in the background, in its thread (a thread cannot
    be stopped); the next call gets another thread. A call still waiting for its place
    never starts. Calls run in a copy of the caller's context (BentoML's request context
    reads the same in the thread). The threads are daemons, as anyio's are in a replica,
    so a model call that never returns does not hold up the process's exit.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._idle: list[_Worker] = []
        self._started = 0
        # Per event loop (one in a replica; a test client starts one of its own).
        self._places: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        places = self._places.get(loop)
        if places is None:
            places = self._places[loop] = asyncio.Semaphore(self.size)
        context = contextvars.copy_context()
        async with places:
            done: asyncio.Future[T] = loop.create_future()
            worker = self._idle.pop() if self._idle else self._start_worker()
            worker.jobs.put((loop, done, lambda: context.run(func, *args, **kwargs)))
            return await done

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._idle, f"{self.name}_{self._started}")
        self._started += 1
        worker.start()
        return worker


class _Worker(threading.Thread):
    """One kept thread: runs a job, reports on the caller's loop, and goes back to idle."""

    def __init__(self, idle: list[_Worker], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._idle = idle

    def run(self) -> None:
        while True:
            loop, done, call = self.jobs.get()
            result: Any = None
            error: BaseException | None = None
            try:
                result = call()
            except StopIteration as exc:
                # A future cannot carry StopIteration; anyio turns it into this, which
                # BentoML's sync-generator streaming looks for.
                error = RuntimeError("coroutine raised StopIteration")
                error.__cause__ = exc
            except BaseException as exc:
                error = exc
            self._idle.append(self)  # before reporting: the next call may take this thread
            with contextlib.suppress(RuntimeError):  # a closed loop: no one is waiting
                loop.call_soon_threadsafe(_report, done, result, error)
            del loop, done, call, result, error  # keep nothing of it while idle


def _report(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
