"""No pickle from clients: BentoML's internal media types are refused at the public ingress.

BentoML's services talk to each other in ``application/vnd.bentoml+pickle``; accepting it
from the network would let any client run code in the replica. On Ray, services talk over
handles, so every public app refuses any ``application/vnd.bentoml*`` body outright.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ._body_limit import ErrorBody

#: BentoML's internal media types (``application/vnd.bentoml+pickle`` and friends).
INTERNAL_MEDIA_TYPE_PREFIX = b"application/vnd.bentoml"


def is_internal_media_type(content_type: bytes) -> bool:
    """Whether a raw ``Content-Type`` header value is one of BentoML's internal types."""
    return content_type.lower().lstrip().startswith(INTERNAL_MEDIA_TYPE_PREFIX)


class RefuseInternalMediaTypes:
    """ASGI middleware: 415 for any request body in one of BentoML's internal media types."""

    def __init__(self, app: ASGIApp, error_body: ErrorBody) -> None:
        self.app = app
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-type" and is_internal_media_type(value):
                    message = (
                        f"Content-Type {value.decode('latin-1')!r} is internal to BentoML "
                        "and is not accepted from clients; send JSON or the API's own type."
                    )
                    await JSONResponse(self.error_body(message), 415)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
