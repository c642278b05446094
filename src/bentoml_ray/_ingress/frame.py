"""The ingress's one frame around each HTTP request: its metrics, its timeout, its 500.

Three jobs watch every request's answer: BentoML's request metrics (the status, and the
time when the last body part goes out), the traffic timeout (the answer has started: it
is no longer bounded) and Starlette's last-resort error handler (an exception with no
answer started gets a plain 500). As three middlewares, each wrapped ``send`` in a
coroutine of its own, so every message of every answer, every chunk of a stream, passed
three frames. Here one ``send`` does all three, and the public app (``PublicApp``) leaves
Starlette's own error middleware out, since this frame does its job.

What a client sees is unchanged: the same 504 body (BentoML's), the same plain-text 500,
the same metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import route_path
from .request_metrics import RequestMetricsSpec, request_counts
from .timeout import Deadlines

#: The timed-out requests of a frame with no timeout: none.
_NONE: frozenset[Any] = frozenset()


class IngressFrame:
    """ASGI middleware, outermost: counts and times requests (but ``metrics_path``'s, if
    ``metrics`` names BentoML's request metrics), answers 504 past ``timeout`` seconds
    with no answer started (None: no bound), and a plain 500 for an exception raised
    before an answer started, as Starlette's ``ServerErrorMiddleware``."""

    def __init__(
        self,
        app: ASGIApp,
        timeout: float | None,
        metrics: RequestMetricsSpec | None,
        metrics_path: str,
    ) -> None:
        self.app = app
        self.deadlines = Deadlines(timeout) if timeout else None
        self.counts = request_counts(metrics) if metrics is not None else None
        self.metrics_path = metrics_path
        self.skip = tuple(metrics.skip_paths) if metrics is not None else ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan, a mounted app's websocket
            await self.app(scope, receive, send)
            return
        counts, path = self.counts, ""
        if counts is not None:
            path = route_path(scope) or "/"  # the path in the application, as BentoML's
            if path == self.metrics_path:
                counts = None
            else:
                if not path.startswith(self.skip):
                    counts.last_request = time.time()
                counts.in_flight[path] = counts.in_flight.get(path, 0) + 1
        deadlines = self.deadlines
        task = asyncio.current_task() if deadlines is not None else None
        waiting: set[asyncio.Task[Any]] | None = None  # None: no timeout to keep
        timed_out: Collection[asyncio.Task[Any]] = _NONE  # a shared empty set, not one each
        cancels_before = 0
        if deadlines is not None and task is not None:
            cancels_before = task.cancelling() if hasattr(task, "cancelling") else 0
            waiting, timed_out = deadlines.waiting_set(), deadlines.timed_out
            waiting.add(task)
        start = time.perf_counter()
        status = 0  # of the answer, once started

        async def frame_send(message: Message) -> None:
            nonlocal status
            if not status:
                if waiting is not None:
                    if task in timed_out:
                        return  # an answer begun after the timeout (a 500 for the cancel)
                    waiting.discard(task)  # under way: let it finish, however long
                status = message["status"]  # an answer starts with http.response.start
            elif (
                counts is not None
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                counts.answer(path, status, time.perf_counter() - start)
            await send(message)

        try:
            try:
                await self.app(scope, receive, frame_send)
            except (asyncio.CancelledError, Exception) as exc:
                if task is None or task not in timed_out:
                    if not status and isinstance(exc, Exception):
                        await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                    raise
                # What a call cancelled by the timeout raised is moot: the answer is 504.
            finally:
                if waiting is not None:
                    waiting.discard(task)
            if deadlines is None or task is None or task not in timed_out:
                return
            deadlines.timed_out.discard(task)
            if hasattr(task, "uncancel") and task.uncancel() > cancels_before:
                raise asyncio.CancelledError  # cancelled by someone else too: the client left
            if not status:
                await deadlines.answer()(scope, receive, frame_send)
        finally:
            if counts is not None:
                counts.in_flight[path] -= 1


class PublicApp(Starlette):
    """A Starlette app whose outermost middleware is an ``IngressFrame``: Starlette's own
    error middleware, which wraps ``send`` once more, is left out. Ray Serve still reads
    its routes (``routes``, ``router``) to name each request's route."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        assert isinstance(stack, ServerErrorMiddleware)  # Starlette's, outermost
        inner: ASGIApp = stack.app
        assert isinstance(inner, IngressFrame), "the first middleware must be the frame"
        return inner
