"""Loading a runner-based service inside a replica, the API server's or a runner's."""

from __future__ import annotations

from typing import Any

from .._bento.source import BentoSource


def load_service(source: BentoSource) -> Any:
    """The runner-based service, loaded in a replica (API server or runner).

    ``bentoml serve`` runs the service's ``on_deployment`` hooks once, before its workers
    start; on Ray each replica may be on another node, so every replica runs them, once,
    as soon as it has loaded the service (a hook that prepares the node runs there too).
    """
    svc = source.load()
    for hook in svc.deployment_hooks:
        hook()
    return svc
