"""Where a runner's model call runs: inline on the loop when short, else in a worker thread.

A real BentoML runner on a plain asyncio loop (no Ray: the handle is the same in a runner
replica and in an API server with an embedded runner; both are served in other tests).
"""

from __future__ import annotations

import asyncio
import threading
import time

import bentoml

from bentoml_ray._local_runner import INLINE_BELOW_S, CallDuration, LocalRunnerHandle


class Probe(bentoml.legacy.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = True
    running = 0
    most_at_once = 0

    @bentoml.legacy.Runnable.method(batchable=False)
    def where(self, seconds: float) -> int:
        """Sleeps ``seconds``; returns the thread it ran in, counting overlapping calls."""
        Probe.running += 1
        Probe.most_at_once = max(Probe.most_at_once, Probe.running)
        time.sleep(seconds)
        Probe.running -= 1
        return threading.get_ident()


def test_short_calls_run_inline_and_a_slow_one_sends_the_next_to_the_thread() -> None:
    runner = bentoml.legacy.Runner(Probe, name="probe")

    async def scenario() -> None:
        handle = LocalRunnerHandle(runner, {})
        loop_thread = threading.get_ident()

        async def where(seconds: float) -> int:
            return await handle.async_run_method(runner.where, seconds)  # type: ignore[arg-type]

        assert await where(0) != loop_thread  # unknown duration: a worker thread
        assert {await where(0) for _ in range(3)} == {loop_thread}  # short: inline
        assert await where(0.02) == loop_thread  # still judged short before it ran
        assert await where(0) != loop_thread  # the slow call counts at once
        # Concurrent callers, some in the thread, some inline: never two calls at once.
        await asyncio.gather(*(where(0.002 if i % 5 == 0 else 0) for i in range(40)))
        assert Probe.most_at_once == 1

    asyncio.run(scenario())


def test_call_duration_estimate() -> None:
    duration = CallDuration()
    assert not duration.short  # unknown
    duration.record(INLINE_BELOW_S / 10)
    assert duration.short
    duration.record(0.5)  # one slow call: at once
    assert duration.estimate == 0.5 and not duration.short
    for _ in range(12):  # fast ones: halving it each
        duration.record(0.0)
    assert duration.short
