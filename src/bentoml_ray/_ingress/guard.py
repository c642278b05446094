"""What a guard of the public ingress is: a check that knows by itself which requests it takes.

A guard answers a request itself (a 415, a 413, ``/metrics``) or watches it on its way to
the service (a body counted as it streams). Because each one says which requests it acts
on (``acts_on``), the direct path to an API's endpoint (``gate``) is simply "no guard acts
on this request": the guards' rules are written once, in the guards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

#: Builds the JSON body of an error answer from its message, in the service's own style
#: (a runner-based service answers a JSON string, a 1.2+ one ``{"error": ...}``).
ErrorBody = Callable[[str], Any]


class Guard(Protocol):
    def acts_on(self, scope: Scope) -> bool:
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
