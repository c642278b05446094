"""The API server's traffic timeout for runner-based services: 504 and the call cancelled.

``bentoml serve`` bounds every request of a legacy service by ``api_server.traffic.timeout``
(BentoML's configuration, 60 s by default) until the response starts. The API server on
Ray applies the same bound from the same setting: when it passes, the request's task is
cancelled, which cancels the API function and the runner call it awaits, and the client
gets BentoML's own 504 answer. (1.2+ services need nothing here: BentoML's app, which
the root replica runs, applies the service's ``traffic.timeout`` itself.)
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestTimeout:
    """ASGI middleware: 504 if the app has not started its answer within ``timeout`` s.

    A timer on the loop cancels the request's own task, as ``asyncio.timeout`` does:
    no task per request (they cost about 4 % of a small model's replica).
    """

    def __init__(self, app: ASGIApp, timeout: float | None) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or not self.timeout or task is None:
            await self.app(scope, receive, send)
            return
        started = timed_out = False

        def expire() -> None:
            nonlocal timed_out
            if not started:
                timed_out = True
                task.cancel()

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = True  # the answer is under way: let it finish, however long
            timer.cancel()
            await send(message)

        timer = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            await self.app(scope, receive, noting_send)
        except asyncio.CancelledError:
            if not timed_out:  # the client left: the work stops, as it should
                raise
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancel was ours, not theirs
                task.uncancel()
        except Exception:
            if not timed_out:
                raise  # what a call cancelled by the timeout raised is moot: the answer is 504
        finally:
            timer.cancel()
        if timed_out and not started:
            message = f"Not able to process the request in {self.timeout:g} seconds"
            await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
