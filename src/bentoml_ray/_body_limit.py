"""A cap on request bodies at the public ingress: 413 instead of a replica filling its memory.

Neither Ray Serve's proxy nor BentoML's server limits how large a request body may be, so
one client could make a replica buffer gigabytes. The limit is read in the ingress replica
from ``BENTOML_RAY_MAX_REQUEST_BODY_SIZE`` (bytes; ``0`` turns the cap off), which a user
sets through the ingress deployment's ``ray_actor_options.runtime_env.env_vars`` or in the
Ray nodes' environment. A declared ``Content-Length`` over the limit is refused before a
byte of the body is read; a body without one (chunked) is counted as it streams in, and
refused as soon as it passes the limit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._defaults import MAX_BODY_SIZE, MAX_BODY_SIZE_ENV

#: Builds the JSON body of an error answer from its message, in the service's own style.
ErrorBody = Callable[[str], Any]


def max_body_size() -> int | None:
    """The limit this replica applies, from the environment; None when turned off."""
    raw = os.environ.get(MAX_BODY_SIZE_ENV, "").strip()
    if not raw:
        return MAX_BODY_SIZE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{MAX_BODY_SIZE_ENV} must be a whole number of bytes (0: no limit), not {raw!r}."
        ) from None
    if value < 0:
        raise ValueError(f"{MAX_BODY_SIZE_ENV} must be >= 0 (0: no limit), not {value}.")
    return value or None


class LimitRequestBody:
    """ASGI middleware: 413 for a request body larger than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, error_body: ErrorBody, limit: int | None) -> None:
        self.app = app
        self.error_body = error_body
        self.limit = limit

    def _too_large(self) -> JSONResponse:
        message = (
            f"The request body is larger than this service accepts ({self.limit} bytes). "
            f"The limit is set by {MAX_BODY_SIZE_ENV} in the ingress replica's environment."
        )
        return JSONResponse(self.error_body(message), 413, headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the HTTP server already refused a malformed length
                if declared > limit:
                    await self._too_large()(scope, receive, send)
                    return

        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not response_started:
                        await self._too_large()(scope, receive, send)
                    # Tell the app the client went away: it stops reading and answering.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 has been sent; whatever the app says now is moot
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
