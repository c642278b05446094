"""No pickle from clients: BentoML's internal media types are refused at the public ingress.

BentoML's services talk to each other in ``application/vnd.bentoml+pickle``; accepting it
from the network would let any client run code in the replica. On Ray, services talk over
handles, so the public ingress refuses any ``application/vnd.bentoml*`` body outright.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .guard import ErrorBody

#: BentoML's internal media types (``application/vnd.bentoml+pickle`` and friends).
INTERNAL_MEDIA_TYPE_PREFIX = b"application/vnd.bentoml"


class RefuseInternalMediaTypes:
    """Guard: 415 for any request body in one of BentoML's internal media types.

    Every ``Content-Type`` header counts: code behind the ingress may read another one
    than the first.
    """

    def __init__(self, error_body: ErrorBody) -> None:
        self.error_body = error_body

    def acts_on(self, scope: Scope) -> bool:
        return _internal_media_type(scope) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        content_type = (_internal_media_type(scope) or b"").decode("latin-1")
        message = (
            f"Content-Type {content_type!r} is internal to BentoML and is not accepted "
            "from clients; send JSON or the API's own type."
        )
        await JSONResponse(self.error_body(message), 415)(scope, receive, send)


def _internal_media_type(scope: Scope) -> bytes | None:
    """The first ``Content-Type`` header of the request that is internal to BentoML."""
    for name, value in scope["headers"]:
        if name == b"content-type" and value.lower().lstrip().startswith(
            INTERNAL_MEDIA_TYPE_PREFIX
        ):
            return value  # type: ignore[no-any-return]
    return None
