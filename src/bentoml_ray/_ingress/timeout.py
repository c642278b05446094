"""The traffic timeout of every public HTTP app: 504 and the call cancelled.

``bentoml serve`` bounds every request until its response starts: a legacy service's by
``api_server.traffic.timeout`` (BentoML's configuration, 60 s by default), a 1.2+ service's
by its ``traffic.timeout``. On Ray the same bounds apply, from the same settings (the
public ingress applies them for both kinds, in place of BentoML's own timeout
middleware): when one passes, the
request's task is cancelled, which cancels the API function and the call it awaits, and
the client gets BentoML's own 504 answer.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Deadlines are rounded up to a multiple of this, and the requests that share one share
#: its timer, so a request times out up to this much later than its timeout.
GRANULARITY_S = 0.25


class RequestTimeout:
    """ASGI middleware: 504 if the app has not started its answer within ``timeout`` s.

    HTTP requests only: a websocket (a mounted ASGI app's) is not bounded, where BentoML's
    middleware tried to answer it with a 504 it cannot carry.

    No task and no timer per request: a timer each (its handle, its heap entry, its
    cancellation) was 3 % of a small model's replica. The requests whose deadlines fall
    in one ``GRANULARITY_S`` slice wait in one set, and one timer cancels the tasks still
    in it; the cancel is then taken back, as ``asyncio.timeout`` does, so that a cancel
    from anyone else (the client leaving) still ends the task. (Python 3.10 counts no
    cancels: there a client that leaves in the same turn of the loop as its timeout fires
    gets the 504 written to its closed connection, and the task ends as after a 504.)
    """

    def __init__(self, app: ASGIApp, timeout: float | None) -> None:
        self.app = app
        self.timeout = timeout
        # Per event loop (one in a replica; a test client starts one of its own): by
        # deadline, the tasks whose answer has not started.
        self._waiting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[float, set[asyncio.Task[Any]]]
        ] = weakref.WeakKeyDictionary()
        self._timed_out: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or not self.timeout or task is None:
            await self.app(scope, receive, send)
            return
        cancels_before = task.cancelling() if hasattr(task, "cancelling") else 0
        waiting = self._waiting_set(self.timeout)
        waiting.add(task)
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            if not started:
                if task in self._timed_out:
                    return  # an answer begun after the timeout (a 500 for the cancel): moot
                started = True  # the answer is under way: let it finish, however long
                waiting.discard(task)
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except (asyncio.CancelledError, Exception):
            # What a call cancelled by the timeout raised is moot: the answer is 504.
            if task not in self._timed_out:
                raise
        finally:
            waiting.discard(task)
        if task not in self._timed_out:
            return
        self._timed_out.discard(task)
        if hasattr(task, "uncancel") and task.uncancel() > cancels_before:
            raise asyncio.CancelledError  # cancelled by someone else too: the client left
        if not started:
            # The timeout as configured: BentoML says "60.0" for a 1.2+ service's default.
            message = f"Not able to process the request in {self.timeout} seconds"
            await JSONResponse({"error": message}, status_code=504)(scope, receive, send)

    def _waiting_set(self, timeout: float) -> set[asyncio.Task[Any]]:
        """The set of the requests due when this one is, with a timer for it."""
        loop = asyncio.get_running_loop()
        by_deadline = self._waiting.get(loop)
        if by_deadline is None:
            by_deadline = self._waiting[loop] = {}
        deadline = math.ceil((loop.time() + timeout) / GRANULARITY_S) * GRANULARITY_S
        waiting = by_deadline.get(deadline)
        if waiting is None:
            waiting = by_deadline[deadline] = set()
            loop.call_at(deadline, self._expire, by_deadline, deadline)
        return waiting

    def _expire(self, by_deadline: dict[float, set[asyncio.Task[Any]]], deadline: float) -> None:
        for task in by_deadline.pop(deadline, ()):
            self._timed_out.add(task)
            task.cancel()
