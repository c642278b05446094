"""What a guard of the public ingress is: a check that knows by itself which requests it takes.

A guard answers a request itself (a 415, a 413, ``/metrics``) or watches it on its way to
the service (a body counted as it streams). Because each one says which requests it acts
on (``acts_on``), the direct path to an API's endpoint (``gate``) is simply "no guard acts
on this request": the guards' rules are written once, in the guards. What they judge by
in the headers is read in one pass per request (``RequestHead``), not once per guard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

#: Builds the JSON body of an error answer from its message, in the service's own style
#: (a runner-based service answers a JSON string, a 1.2+ one ``{"error": ...}``).
ErrorBody = Callable[[str], Any]


#: BentoML's internal media types (``application/vnd.bentoml+pickle`` and friends).
INTERNAL_MEDIA_TYPE_PREFIX = b"application/vnd.bentoml"


class RequestHead(NamedTuple):
    """What the guards judge a request by in its headers, read in one pass."""

    #: The first ``Content-Type`` internal to BentoML (every such header counts: code
    #: behind the ingress may read another one than the first), or None.
    internal_media_type: bytes | None
    #: The body length, if the request declares exactly one and frames by it; None for
    #: a body sent in chunks (``Transfer-Encoding``, whatever length it also declares),
    #: two ``Content-Length`` headers, or one that is not a number.
    declared_length: int | None


def read_head(scope: Scope) -> RequestHead:
    internal: bytes | None = None
    declared: int | None = None
    framed = True  # by its one Content-Length, if it has one
    for name, value in scope["headers"]:
        if name == b"content-type":
            if internal is None and value.lower().lstrip().startswith(INTERNAL_MEDIA_TYPE_PREFIX):
                internal = value
        elif name == b"content-length":
            if declared is not None:
                framed = False
            try:
                declared = int(value)
            except ValueError:
                framed = False
        elif name == b"transfer-encoding":
            framed = False
    return RequestHead(internal, declared if framed else None)


class Guard(Protocol):
    def acts_on(self, scope: Scope, head: RequestHead) -> bool:
        """Whether this guard answers or watches the HTTP request ``scope``."""
        ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Handle a request it acts on; ``app`` is what comes after it."""
        ...


def route_path(scope: Scope) -> str:
    """The path below the app's mount point, as Starlette's router matches it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    below = path[len(root_path) :]
    return below if below == "" or below[0] == "/" else path
