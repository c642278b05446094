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
import contextlib

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestTimeout:
    """ASGI middleware: 504 if the app has not started its answer within ``timeout`` s."""

    def __init__(self, app: ASGIApp, timeout: float | None) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.timeout:
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def noting_send(message: Message) -> None:
            started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, noting_send))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=self.timeout, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:  # the client left: stop the work too
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if started.is_set() or task.done():
            await task  # the answer is under way (or done): let it finish, however long
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task  # what the cancelled call raised is moot: the answer is the 504
        message = f"Not able to process the request in {self.timeout:g} seconds"
        await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
