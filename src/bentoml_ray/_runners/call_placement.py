"""Where a runner's next model call runs: inline on the event loop, or in a worker thread.

For a small model the hop to a worker thread (a thread wake-up and two GIL hand-offs)
costs more than the model itself, so short calls run inline. Deciding "short" is the
subtle part: under load a call's wall time also counts the time its thread waited for
the GIL while another thread held it (up to Python's 5 ms switch interval per hand-off),
and a thread avoids none of that. So a call is judged by what it costs itself:

- its CPU time (``time.thread_time``), which GIL waits do not inflate: a call whose CPU
  time passes ``INLINE_BELOW_S`` is a model that computes, and belongs in the thread;
- a wait that shows on *every* inline call of a window (the minimum wall time over the
  last ``WAIT_WINDOW`` inline calls passes ``INLINE_BELOW_S``): a model that waits on a
  device, on I/O or on its own threads holds up the loop on each call, where contention
  for the GIL shows on some calls only. (An earlier rule counted the *share* of long
  inline calls; under load GIL waits alone reached it, and the calls that went to the
  thread met the same waits there: 0.68-0.79 of hand-written against 0.78-0.89 without.)
- one very long call (``LONG_CALL_S`` of wall time), whatever the reason: an inline call
  that long stalled every request of the replica.

A call that goes to the thread doubles the thread calls before the next inline try, up
to ``MAX_BACKOFF``, so a model that keeps waiting stalls the loop ever more rarely; the
try (the probe) is one inline call, and if it is fast, calls stay inline. One slow call
by CPU time after ``FAST_STREAK`` fast ones is a hiccup (a garbage collection in the
call, say) and changes nothing. A user who knows the model can fix the placement per
runner (``placement: inline | thread``); ``auto`` is this rule.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

from .._defaults import INLINE_BELOW_S, RUNNER_PLACEMENT

Placement = Literal["inline", "thread", "auto"]
PLACEMENTS: tuple[Placement, ...] = ("inline", "thread", "auto")

#: An inline call longer than this (wall time) sends the next calls to the thread, and a
#: thread call this long puts the next inline try ``MAX_BACKOFF`` calls away: the model
#: is likely that slow, and an inline try would stall the replica for as long. Shorter
#: waits are common under load (taking the GIL back can wait 5 ms for the busy loop).
LONG_CALL_S = 0.1

#: The most thread calls between two inline tries of a model that keeps being slow inline.
MAX_BACKOFF = 1024

#: Inline calls over which a wait must show on every one to count (their minimum).
WAIT_WINDOW = 8

#: Fast inline calls in a row after which one slow by CPU time is taken for a hiccup.
FAST_STREAK = 16


class CallPlacement:
    """Inline or thread for one runner method, from how its recent calls went.

    ``auto``: unknown at first, so the first call runs in the thread. ``inline`` and
    ``thread`` never change. ``inline_calls`` and ``thread_calls`` count where calls ran.
    """

    def __init__(self, mode: Placement = RUNNER_PLACEMENT, counters: Any = None) -> None:
        self.inline = mode == "inline"
        self._auto = mode == "auto"
        self._counters = counters  # (inline, thread) Prometheus children, or None
        self._backoff = 1  # thread calls to make after the next slow inline call
        self._wait = 1  # short thread calls still to make before the next inline try
        self._fast_streak = 0
        self._walls: deque[float] = deque(maxlen=WAIT_WINDOW)  # of recent inline calls

    def record_inline(self, wall_s: float, cpu_s: float) -> None:
        if self._counters is not None:
            self._counters[0].inc()
        if not self._auto:
            return
        self._walls.append(wall_s)
        waits = len(self._walls) == WAIT_WINDOW and min(self._walls) >= INLINE_BELOW_S
        if cpu_s < INLINE_BELOW_S and not waits and wall_s < LONG_CALL_S:
            self._fast_streak += 1
            if self._fast_streak >= FAST_STREAK:
                self._backoff = 1
            return
        if self._fast_streak >= FAST_STREAK and not waits and wall_s < LONG_CALL_S:
            self._fast_streak = 0  # a hiccup
            return
        self.inline = False
        self._fast_streak = 0
        self._wait = MAX_BACKOFF if wall_s >= LONG_CALL_S else self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def record_thread(self, wall_s: float, cpu_s: float) -> None:
        if self._counters is not None:
            self._counters[1].inc()
        if not self._auto:
            return
        if wall_s >= LONG_CALL_S:
            self._wait = MAX_BACKOFF
        elif cpu_s >= INLINE_BELOW_S:
            self._wait = max(self._wait, self._backoff)  # computes: start the count over
        else:
            self._wait -= 1
            if self._wait <= 0:
                self.inline = True  # the probe: one inline call decides


class PlacementCounters:
    """``bentoml_ray_runner_calls_total{runner, method, placement}`` in the replica's
    registry (it reaches ``/metrics`` and Ray's metrics): where a runner's model calls
    ran, so a benchmark sees placement without a profiler."""

    _family: Any = None

    @classmethod
    def for_method(cls, runner: str, method: str) -> tuple[Any, Any]:
        if cls._family is None:
            import prometheus_client as prom

            cls._family = prom.Counter(
                "bentoml_ray_runner_calls",
                "Model calls of a runner method, by where they ran (inline on the "
                "replica's event loop, or in the runner's worker thread).",
                ["runner", "method", "placement"],
            )
        return (
            cls._family.labels(runner, method, "inline"),
            cls._family.labels(runner, method, "thread"),
        )
