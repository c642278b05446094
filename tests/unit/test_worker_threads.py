"""WorkerThreads: sync user code on threads a replica keeps, on a loop like a replica's.

A Ray replica's event loop runs forever in a thread of its own, with no root task; that
is where anyio started a thread per call. These tests run such a loop (the pool in a real
replica is checked in ``test_bad_input``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from bentoml_ray._replica.worker_threads import WorkerThreads

T = TypeVar("T")

REQUEST = contextvars.ContextVar("REQUEST", default="none")


@pytest.fixture
def replica_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    loop.close()


def _on(loop: asyncio.AbstractEventLoop, call: Coroutine[Any, Any, T]) -> T:
    """Run ``call`` as a request of its own: a new task on the replica's loop."""
    return asyncio.run_coroutine_threadsafe(call, loop).result(10)


def test_calls_from_many_requests_share_the_same_threads(
    replica_loop: asyncio.AbstractEventLoop,
) -> None:
    threads = WorkerThreads(2, "probe")
    seen = {_on(replica_loop, threads.run(threading.current_thread)) for _ in range(30)}
    assert len(seen) == 1 and next(iter(seen)).name == "probe_0"


def test_a_call_sees_the_callers_context_variables(
    replica_loop: asyncio.AbstractEventLoop,
) -> None:
    threads = WorkerThreads(1, "probe")

    async def request(name: str) -> str:
        REQUEST.set(name)
        return await threads.run(REQUEST.get)

    assert [_on(replica_loop, request(name)) for name in ("a", "b")] == ["a", "b"]


@pytest.mark.parametrize("size", [1, 2])
def test_no_more_than_size_calls_run_at_once(
    replica_loop: asyncio.AbstractEventLoop, size: int
) -> None:
    threads = WorkerThreads(size, "probe")
    running, most = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def requests() -> None:
        await asyncio.gather(*(threads.run(work) for _ in range(6)))

    _on(replica_loop, requests())
    assert most == size


def test_a_cancelled_caller_frees_its_place_at_once_and_a_queued_call_never_starts(
    replica_loop: asyncio.AbstractEventLoop,
) -> None:
    """As anyio's limiter: a call whose caller left runs on in its thread, out of the count."""
    threads = WorkerThreads(1, "probe")
    started: list[str] = []
    release = threading.Event()

    def work(name: str) -> str:
        started.append(name)
        release.wait(5)
        return name

    async def scenario() -> list[bool]:
        running = asyncio.ensure_future(threads.run(work, "running"))
        queued = asyncio.ensure_future(threads.run(work, "queued"))
        await asyncio.sleep(0.1)
        running.cancel()
        queued.cancel()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        return [isinstance(outcome, asyncio.CancelledError) for outcome in outcomes]

    assert _on(replica_loop, scenario()) == [True, True]  # at once, the thread still busy
    # The next call does not wait for the abandoned one: it gets a thread of its own.
    assert _on(replica_loop, threads.run(threading.current_thread)).name == "probe_1"
    assert started == ["running"]
    release.set()


def test_stop_iteration_reaches_the_caller_as_anyio_reports_it(
    replica_loop: asyncio.AbstractEventLoop,
) -> None:
    """BentoML streams a sync generator API with ``next`` in a thread and stops on this."""
    threads = WorkerThreads(1, "probe")
    with pytest.raises(RuntimeError, match="StopIteration"):
        _on(replica_loop, threads.run(next, iter([])))
    assert _on(replica_loop, threads.run(next, iter(["still serving"]))) == "still serving"


def test_the_threads_are_daemons(replica_loop: asyncio.AbstractEventLoop) -> None:
    """A model call that never returns must not hold up the replica process's exit."""
    threads = WorkerThreads(1, "probe")
    assert _on(replica_loop, threads.run(threading.current_thread)).daemon
