"""Running a mounted ASGI app's lifespan, through its whole middleware stack.

Starlette runs the lifespan of the app it serves only; a mounted app's startup and
shutdown hooks would never run. Running the mounted app's router's lifespan directly
would skip its middlewares, which see the lifespan when the app is served by itself. So
the app is called with a lifespan scope of its own, as a server would call it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message


@contextlib.asynccontextmanager
async def asgi_lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """``app``'s startup before the block, its shutdown after; a failure of either raises."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.ensure_future(app(scope, to_app.get, from_app.put))

    async def step(event: str) -> None:
        await to_app.put({"type": f"lifespan.{event}"})
        answer = asyncio.ensure_future(from_app.get())
        await asyncio.wait({answer, running}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            running.result()  # the app raised: that is the failure
            raise RuntimeError(f"The app returned before its lifespan {event} completed.")
        message = answer.result()
        if message["type"] == f"lifespan.{event}.failed":
            raise RuntimeError(message.get("message") or f"lifespan {event} failed")

    try:
        await step("startup")
        yield
        await step("shutdown")
    finally:
        if not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
