"""Where a runner's model call runs: inline on the loop when short, else in a worker thread.

A real BentoML runner on a plain asyncio loop (no Ray: the handle is the same in a runner
replica and in an API server with an embedded runner; both are served in other tests).
"""

from __future__ import annotations

import asyncio
import threading
import time

import bentoml
import pytest

from bentoml_ray._defaults import INLINE_BELOW_S
from bentoml_ray._runners import call_placement as _call_placement
from bentoml_ray._runners.call_placement import (
    FAST_STREAK,
    MAX_BACKOFF,
    PROBE_WALL_LIMIT_S,
    CallPlacement,
)
from bentoml_ray._runners.local_runner import LocalRunnerHandle


class Probe(bentoml.legacy.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = True
    running = 0
    most_at_once = 0

    @bentoml.legacy.Runnable.method(batchable=False)
    def where(self, seconds: float, compute: bool = False) -> int:
        """Computes (on the CPU) or waits ``seconds``; returns the thread it ran in.

        Counts overlapping calls.
        """
        Probe.running += 1
        Probe.most_at_once = max(Probe.most_at_once, Probe.running)
        if compute:
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass
        else:
            time.sleep(seconds)
        Probe.running -= 1
        return threading.get_ident()


def test_short_calls_run_inline_and_a_slow_one_sends_the_next_to_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thresholds far from the sleeps, so that a loaded machine cannot flip a decision
    # (a 0 s call descheduled for a few ms once made this test fail; the session's Bento
    # builds and mypy run beside the unit tests).
    monkeypatch.setattr(_call_placement, "INLINE_BELOW_S", 0.1)
    monkeypatch.setattr(_call_placement, "PROBE_WALL_LIMIT_S", 60.0)
    runner = bentoml.legacy.Runner(Probe, name="probe")

    async def scenario() -> None:
        handle = LocalRunnerHandle(runner, {})
        Probe.running = Probe.most_at_once = 0
        loop_thread = threading.get_ident()

        async def where(seconds: float, compute: bool = True) -> int:
            method = runner.where
            return await handle.async_run_method(method, seconds, compute)  # type: ignore[arg-type]

        assert await where(0) != loop_thread  # unknown duration: a worker thread
        assert {await where(0) for _ in range(3)} == {loop_thread}  # short: inline
        assert await where(0.12) == loop_thread  # still judged short before it ran
        assert await where(0) != loop_thread  # the slow call counts at once
        assert await where(0) == loop_thread  # one short call in the thread: inline again
        # Concurrent callers, some in the thread, some inline: never two calls at once.
        await asyncio.gather(*(where(0.12 if i % 10 == 0 else 0) for i in range(40)))
        assert Probe.most_at_once == 1

        # A model that waits (a device, I/O) uses little CPU but holds up the loop: after
        # a few such calls in a row, it is taken for what it is and leaves the loop.
        handle = LocalRunnerHandle(runner, {})
        assert await where(0, compute=False) != loop_thread
        places = [await where(0.12, compute=False) == loop_thread for _ in range(8)]
        assert places[:5] == [True] * 5 and not places[5]
        assert places[6:].count(True) <= 1

    asyncio.run(scenario())


def test_a_call_that_waited_for_the_gil_in_the_thread_still_goes_back_inline() -> None:
    placement = CallPlacement()
    assert not placement.inline  # unknown: the thread
    # 4 ms of wall time, most of it waiting for the GIL the loop held; 0.2 ms of CPU.
    placement.record_thread(wall_s=0.004, cpu_s=0.0002)
    assert placement.inline
    placement.record_inline(INLINE_BELOW_S / 10, INLINE_BELOW_S / 10)
    assert placement.inline


def test_inline_calls_preempted_now_and_then_by_other_threads_stay_inline() -> None:
    placement = CallPlacement()
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    for call in range(1000):  # one call in ten waited 5 ms for the GIL: 0.3 ms of CPU
        placement.record_inline(0.005 if call % 10 == 0 else 0.0003, 0.0003)
        assert placement.inline


def test_a_slow_inline_call_after_a_fast_streak_is_a_hiccup() -> None:
    placement = CallPlacement()
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    placement.record_inline(0.003, 0.003)  # slow, with no fast streak yet: the thread
    assert not placement.inline
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert placement.inline
    for _ in range(FAST_STREAK):
        placement.record_inline(0.0003, 0.0003)
    placement.record_inline(0.003, 0.003)  # a garbage collection in the call, say
    assert placement.inline  # a hiccup: no thread call at all
    placement.record_inline(0.003, 0.003)  # slow again, at once: the thread, for one call
    assert not placement.inline
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert placement.inline


def test_a_model_slow_inline_but_idle_in_its_thread_is_tried_inline_ever_more_rarely() -> None:
    """Work in other threads or on a device: little CPU in the calling thread."""
    placement = CallPlacement()
    tries = 0
    for _ in range(20_000):
        if placement.inline:
            tries += 1
            placement.record_inline(0.005, 0.0001)
        else:
            placement.record_thread(wall_s=0.005, cpu_s=0.0001)
    # A few calls until waits are common, then doubling up to the cap, then capped.
    assert tries <= 16 + 20_000 // MAX_BACKOFF


def test_cpu_bound_or_long_calls_stay_in_the_thread() -> None:
    placement = CallPlacement()
    for _ in range(100):
        placement.record_thread(wall_s=0.002, cpu_s=0.002)  # CPU-bound, past the limit
    assert not placement.inline
    placement.record_thread(wall_s=PROBE_WALL_LIMIT_S, cpu_s=0.0)  # long, off-CPU
    for _ in range(MAX_BACKOFF - 1):
        placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert not placement.inline  # a long call: the next inline try is MAX_BACKOFF calls away
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert placement.inline


def test_a_caller_that_leaves_does_not_let_the_next_call_overlap_its_thread_call() -> None:
    runner = bentoml.legacy.Runner(Probe, name="probe_cancel")

    async def scenario() -> None:
        handle = LocalRunnerHandle(runner, {})
        Probe.running = Probe.most_at_once = 0
        first = asyncio.ensure_future(
            handle.async_run_method(runner.where, 0.3)  # type: ignore[arg-type]
        )  # unknown duration: in the worker thread
        await asyncio.sleep(0.05)
        first.cancel()  # the client went away; the thread cannot be stopped
        await handle.async_run_method(runner.where, 0)  # type: ignore[arg-type]
        assert Probe.most_at_once == 1
        assert first.cancelled()

    asyncio.run(scenario())
