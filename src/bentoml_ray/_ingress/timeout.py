"""The traffic timeout of every public HTTP app: 504 and the call cancelled.

``bentoml serve`` bounds every request until its response starts: a legacy service's by
``api_server.traffic.timeout`` (BentoML's configuration, 60 s by default), a 1.2+ service's
by its ``traffic.timeout``. On Ray the same bounds apply, from the same settings (the
public ingress's ``IngressFrame`` keeps them for both kinds, in place of BentoML's own
timeout middleware): when one passes, the request's task is cancelled, which cancels the
API function and the call it awaits, and the client gets BentoML's own 504 answer.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any

from starlette.responses import JSONResponse

#: Deadlines are rounded up to a multiple of this, and the requests that share one share
#: its timer, so a request times out up to this much later than its timeout.
GRANULARITY_S = 0.25


class Deadlines:
    """The requests of one timeout whose answer has not started, and the timers that end them.

    HTTP requests only (``IngressFrame`` keeps them): a websocket (a mounted ASGI app's) is
    not bounded, where BentoML's middleware tried to answer it with a 504 it cannot carry.

    No task and no timer per request: a timer each (its handle, its heap entry, its
    cancellation) was 3 % of a small model's replica. The requests whose deadlines fall
    in one ``GRANULARITY_S`` slice wait in one set, and one timer cancels the tasks still
    in it (``timed_out`` then holds them); the frame takes the cancel back, as
    ``asyncio.timeout`` does, so that a cancel from anyone else (the client leaving) still
    ends the task. (Python 3.10 counts no cancels: there a client that leaves in the same
    turn of the loop as its timeout fires gets the 504 written to its closed connection,
    and the task ends as after a 504.)
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # Per event loop (one in a replica; a test client starts one of its own): by
        # deadline, the tasks whose answer has not started.
        self._waiting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[float, set[asyncio.Task[Any]]]
        ] = weakref.WeakKeyDictionary()
        self.timed_out: set[asyncio.Task[Any]] = set()

    def answer(self) -> JSONResponse:
        """BentoML's 504, with the timeout as configured (it says "60.0" for a 1.2+
        service's default)."""
        message = f"Not able to process the request in {self.timeout} seconds"
        return JSONResponse({"error": message}, status_code=504)

    def waiting_set(self) -> set[asyncio.Task[Any]]:
        """The set of the requests due when one starting now is, with a timer for it."""
        loop = asyncio.get_running_loop()
        by_deadline = self._waiting.get(loop)
        if by_deadline is None:
            by_deadline = self._waiting[loop] = {}
        deadline = math.ceil((loop.time() + self.timeout) / GRANULARITY_S) * GRANULARITY_S
        waiting = by_deadline.get(deadline)
        if waiting is None:
            waiting = by_deadline[deadline] = set()
            loop.call_at(deadline, self._expire, by_deadline, deadline)
        return waiting

    def _expire(self, by_deadline: dict[float, set[asyncio.Task[Any]]], deadline: float) -> None:
        for task in by_deadline.pop(deadline, ()):
            self.timed_out.add(task)
            task.cancel()
