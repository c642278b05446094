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
    LONG_CALL_S,
    MAX_BACKOFF,
    WAIT_WINDOW,
    CallPlacement,
    PlacementCounters,
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
    monkeypatch.setattr(_call_placement, "LONG_CALL_S", 60.0)
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

        # A model that waits (a device, I/O) uses little CPU but holds up the loop: once
        # the wait showed on every call of a window, it leaves the loop, and is tried
        # inline again (one call) after ever more calls in the thread.
        handle = LocalRunnerHandle(runner, {})
        assert await where(0, compute=False) != loop_thread
        places = [await where(0.12, compute=False) == loop_thread for _ in range(13)]
        assert places == [True] * WAIT_WINDOW + [False, True, False, False, True]

    asyncio.run(scenario())


def test_a_call_that_waited_for_the_gil_in_the_thread_still_goes_back_inline() -> None:
    placement = CallPlacement()
    assert not placement.inline  # unknown: the thread
    # 4 ms of wall time, most of it waiting for the GIL the loop held; 0.2 ms of CPU.
    placement.record_thread(wall_s=0.004, cpu_s=0.0002)
    assert placement.inline
    placement.record_inline(INLINE_BELOW_S / 10, INLINE_BELOW_S / 10)
    assert placement.inline


@pytest.mark.parametrize("every", [10, 2])
def test_inline_calls_preempted_by_other_threads_stay_inline(every: int) -> None:
    """Under load, GIL waits: one call in ten, or every other call, waited 5 ms (0.3 ms of
    CPU each). A thread would meet the same waits; only a wait on every call counts."""
    placement = CallPlacement()
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    for call in range(1000):
        placement.record_inline(0.005 if call % every == 0 else 0.0003, 0.0003)
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
    # A window until the wait shows on every call; then one try each time the thread
    # calls between tries double (11 tries to reach the cap); then one per cap.
    assert tries <= WAIT_WINDOW + 11 + 20_000 // MAX_BACKOFF


def test_cpu_bound_or_long_calls_stay_in_the_thread() -> None:
    placement = CallPlacement()
    for _ in range(100):
        placement.record_thread(wall_s=0.002, cpu_s=0.002)  # CPU-bound, past the limit
    assert not placement.inline
    placement.record_thread(wall_s=LONG_CALL_S, cpu_s=0.0)  # long, off-CPU
    for _ in range(MAX_BACKOFF - 1):
        placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert not placement.inline  # a long call: the next inline try is MAX_BACKOFF calls away
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert placement.inline


def test_one_very_long_inline_call_sends_the_calls_to_the_thread_for_long() -> None:
    placement = CallPlacement()
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    for _ in range(FAST_STREAK):
        placement.record_inline(0.0003, 0.0003)
    placement.record_inline(LONG_CALL_S, 0.0003)  # no hiccup: it stalled the replica
    assert not placement.inline
    for _ in range(MAX_BACKOFF - 1):
        placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert not placement.inline
    placement.record_thread(wall_s=0.0003, cpu_s=0.0003)
    assert placement.inline


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


def test_a_fixed_placement_never_changes_and_every_call_is_counted() -> None:
    for mode, slow in (("inline", (LONG_CALL_S, LONG_CALL_S)), ("thread", (0.0, 0.0))):
        counters = (_Count(), _Count())
        placement = CallPlacement(mode, counters)  # type: ignore[arg-type]
        for _ in range(3):
            if placement.inline:
                placement.record_inline(*slow)
            else:
                placement.record_thread(*slow)
        assert placement.inline == (mode == "inline")
        assert (counters[0].value, counters[1].value) == ((3, 0) if mode == "inline" else (0, 3))


def test_placement_counters_reach_the_replicas_registry() -> None:
    import prometheus_client

    runner = bentoml.legacy.Runner(Probe, name="probe_counted")

    async def scenario() -> None:
        handle = LocalRunnerHandle(runner, {}, "thread")
        for _ in range(2):
            await handle.async_run_method(runner.where, 0)  # type: ignore[arg-type]

    asyncio.run(scenario())
    labels = {"runner": "probe_counted", "method": "where"}
    value = prometheus_client.REGISTRY.get_sample_value
    assert value("bentoml_ray_runner_calls_total", {**labels, "placement": "thread"}) == 2
    assert not value("bentoml_ray_runner_calls_total", {**labels, "placement": "inline"})
    assert PlacementCounters._family is not None


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
