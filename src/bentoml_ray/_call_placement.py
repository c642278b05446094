"""Where a runner's next model call runs: inline on the event loop, or in a worker thread.

For a small model the hop to a worker thread (a thread wake-up and two GIL hand-offs)
costs more than the model itself, so short calls run inline. Deciding "short" is the
subtle part. A call timed in the worker thread looks slow when it only waited for the GIL
that the busy event loop holds (up to Python's 5 ms switch interval per hand-off), so
judging by its wall time kept a 0.3 ms model in the thread under load, at 0.65x the
throughput. A worker-thread call is therefore judged by the CPU time of its own thread,
which GIL waits do not inflate, while an inline call is judged by its wall time, which is
what the loop really lost.

CPU time understates a model that computes in other threads or waits on a device: such a
call looks short in the thread and is then slow inline. Each slow inline call doubles the
number of thread calls before the next inline try (up to ``MAX_BACKOFF``), so that kind of
model blocks the loop once in a thousand calls at most, and a call whose wall time in the
thread is past ``PROBE_WALL_LIMIT_S`` is never tried inline at all.
"""

from __future__ import annotations

#: Model calls shorter than this run inline. The thread hop costs about this much on a
#: busy 2-core machine.
INLINE_BELOW_S = 0.001

#: A worker-thread call slower than this (wall time) is never tried inline, whatever its
#: CPU time: the model is really that slow, and an inline try would stall every request
#: of the replica for as long. Shorter waits are common under load: each time the model
#: releases the GIL (numpy does, often), taking it back can wait 5 ms for the busy loop.
PROBE_WALL_LIMIT_S = 0.1

#: The most thread calls between two inline tries of a model that keeps being slow inline.
MAX_BACKOFF = 1024


class CallPlacement:
    """Inline or thread for one runner method, from how its recent calls went.

    Unknown at first: the first call runs in the thread.
    """

    def __init__(self) -> None:
        self.inline = False
        self._backoff = 1  # thread calls to wait after the next slow inline call
        self._wait = 1  # short thread calls still to see before trying inline

    def record_inline(self, wall_s: float) -> None:
        if wall_s < INLINE_BELOW_S:
            self._backoff = 1
            return
        self.inline = False
        self._wait = self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def record_thread(self, wall_s: float, cpu_s: float) -> None:
        if cpu_s >= INLINE_BELOW_S or wall_s >= PROBE_WALL_LIMIT_S:
            self._wait = max(self._wait, self._backoff)  # slow in any case: start over
            return
        self._wait -= 1
        if self._wait <= 0:
            self.inline = True
