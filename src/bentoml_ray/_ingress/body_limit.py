"""A cap on request bodies at the public ingress: 413 instead of a replica filling its memory.

Neither Ray Serve's proxy nor BentoML's server limits how large a request body may be, so
one client could make a replica buffer gigabytes. The limit is read in the ingress replica
from ``BENTOML_RAY_MAX_REQUEST_BODY_SIZE`` (bytes; ``0`` turns the cap off), which a user
sets through the ingress deployment's ``ray_actor_options.runtime_env.env_vars`` or in the
Ray nodes' environment. A declared ``Content-Length`` over the limit is refused before a
byte of the body is read; a body without one (chunked) is counted as it streams in, and
refused as soon as it passes the limit.

Starlette 1.6's own ``max_body_size`` (``RequestBodyLimitMiddleware``) is not used: it
answers a fixed plain-text 413 rather than BentoML's error format, it reports an oversized
body by raising inside ``receive()``, which endpoints that turn every decoding error into
a 400 (BentoML's and this package's) catch, and it refuses a declared oversized length
only once the app reads the body, where this guard refuses it before the app runs.
"""

from __future__ import annotations

import os

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._defaults import MAX_BODY_SIZE, MAX_BODY_SIZE_ENV
from .guard import ErrorBody, RequestHead, read_head


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
    """Guard: 413 for a request body larger than ``limit`` bytes.

    It acts on every request whose size is not known to be within the limit from its one
    ``Content-Length``: those over it are refused before a byte is read, the others (sent
    in chunks) are counted as they stream in.
    """

    def __init__(self, limit: int | None, error_body: ErrorBody) -> None:
        self.limit = limit
        self.error_body = error_body

    def acts_on(self, scope: Scope, head: RequestHead) -> bool:
        if self.limit is None:
            return False
        declared = head.declared_length
        return declared is None or declared > self.limit

    def _too_large(self) -> JSONResponse:
        message = (
            f"The request body is larger than this service accepts ({self.limit} bytes). "
            f"The limit is set by {MAX_BODY_SIZE_ENV} in the ingress replica's environment."
        )
        return JSONResponse(self.error_body(message), 413, headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        limit = self.limit
        assert limit is not None  # acts_on is False without a limit
        declared = read_head(scope).declared_length
        if declared is not None and declared > limit:
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
            await app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
