"""No pickle from clients: BentoML's internal media types are refused at the public ingress.

BentoML's services talk to each other in ``application/vnd.bentoml+pickle``; accepting it
from the network would let any client run code in the replica. On Ray, services talk over
handles, so the public ingress refuses any ``application/vnd.bentoml*`` body outright.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .guard import ErrorBody, RequestHead, read_head


class RefuseInternalMediaTypes:
    """Guard: 415 for any request body in one of BentoML's internal media types.

    Every ``Content-Type`` header counts: code behind the ingress may read another one
    than the first.
    """

    def __init__(self, error_body: ErrorBody) -> None:
        self.error_body = error_body

    def acts_on(self, scope: Scope, head: RequestHead) -> bool:
        return head.internal_media_type is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        content_type = (read_head(scope).internal_media_type or b"").decode("latin-1")
        message = (
            f"Content-Type {content_type!r} is internal to BentoML and is not accepted "
            "from clients; send JSON or the API's own type."
        )
        await JSONResponse(self.error_body(message), 415)(scope, receive, send)
