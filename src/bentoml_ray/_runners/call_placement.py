"""Where a runner's next model call runs: inline on the event loop, or in a worker thread.

For a small model the hop to a worker thread (a thread wake-up and two GIL hand-offs)
costs more than the model itself, so short calls run inline. Deciding "short" is the
subtle part: under load a call's wall time also counts the time its thread waited for
the GIL while another thread held it (up to Python's 5 ms switch interval per hand-off).
Judged by wall time, a fifth of a 0.3 ms model's calls went to the thread under load;
and each inline call preempted by one of Ray's own threads sent the next calls to the
thread, where the callers queued behind it (p90 latency 2-3x the hand-written
deployment's). So a call is judged by the CPU time of its own thread, which GIL waits do
not inflate.

CPU time understates a model that waits: on a device, on I/O, on its own threads. Inline,
such a call holds up the loop although its CPU time is short; it shows as a long wall
time on nearly every call, where a GIL wait shows on a few. So an inline call counts as
slow if its CPU time passes ``INLINE_BELOW_S``, or its wall time does while such waits
are common (``STALL_SHARE`` of the recent calls). Each slow inline call doubles the
number of thread calls before the next inline try, up to ``MAX_BACKOFF``, until
``FAST_STREAK`` inline calls in a row were fast again; so a waiting model stalls the loop
ever more rarely, down to once in 1,024 calls. A call whose wall time in the thread
passes ``PROBE_WALL_LIMIT_S`` puts the next inline try ``MAX_BACKOFF`` calls away.

One slow inline call after ``FAST_STREAK`` fast ones is a hiccup (a garbage collection
in the call, say) and changes nothing; a second one in a row goes to the thread. Even a
single thread call is dear under load: every model call of the replica queues behind it
while the worker thread waits to be scheduled and for the GIL. Measured on an embedded
iris replica under 32 connections, in Ray's high-throughput mode: with 10-15 calls in
21,000 sent to the thread, one at a time, its p99 latency was 110-200 ms; with every call
forced inline, 65 ms, as the hand-written deployment's.
"""

from __future__ import annotations

from .._defaults import INLINE_BELOW_S

#: A worker-thread call slower than this (wall time) is not tried inline for the next
#: ``MAX_BACKOFF`` calls, whatever its CPU time: the model is likely that slow, and an
#: inline try would stall every request of the replica for as long. Shorter waits are
#: common under load: each time the model releases the GIL (numpy does, often), taking
#: it back can wait 5 ms for the busy loop.
PROBE_WALL_LIMIT_S = 0.1

#: The most thread calls between two inline tries of a model that keeps being slow inline.
MAX_BACKOFF = 1024

#: The share of recent inline calls with a long wall time (but short CPU time) above which
#: such a call counts as slow: the model waits, rather than its thread waiting for the GIL.
STALL_SHARE = 0.25

#: How many recent inline calls that share is taken over (an exponential average).
STALL_WINDOW = 16

#: Fast inline calls in a row after which a slow one is taken for a hiccup (a garbage
#: collection in the call, say): the calls stay inline, and the thread calls before the
#: next inline try are back to one.
FAST_STREAK = 16


class CallPlacement:
    """Inline or thread for one runner method, from how its recent calls went.

    Unknown at first: the first call runs in the thread.
    """

    def __init__(self) -> None:
        self.inline = False
        self._backoff = 1  # thread calls to wait after the next slow inline call
        self._wait = 1  # short thread calls still to see before trying inline
        self._fast_streak = 0
        self._stall_share = 0.0  # of recent inline calls, long in wall time

    def record_inline(self, wall_s: float, cpu_s: float) -> None:
        stalled = wall_s >= INLINE_BELOW_S
        self._stall_share += (float(stalled) - self._stall_share) / STALL_WINDOW
        if cpu_s < INLINE_BELOW_S and not (stalled and self._stall_share >= STALL_SHARE):
            self._fast_streak += 1
            if self._fast_streak >= FAST_STREAK:
                self._backoff = 1
            return
        if self._fast_streak >= FAST_STREAK:  # a hiccup
            self._fast_streak = 0
            return
        self.inline = False
        self._fast_streak = 0
        self._wait = self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def record_thread(self, wall_s: float, cpu_s: float) -> None:
        if wall_s >= PROBE_WALL_LIMIT_S:
            self._wait = MAX_BACKOFF
            return
        if cpu_s >= INLINE_BELOW_S:
            self._wait = max(self._wait, self._backoff)  # CPU-bound: start the count over
            return
        self._wait -= 1
        if self._wait <= 0:
            self.inline = True
