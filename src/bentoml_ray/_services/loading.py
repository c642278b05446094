"""Loading a 1.2+ service inside a Ray worker: a Serve replica's, or a Ray Data actor's.

Runs in a replica or an actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._bento.source import BentoSource
from .._bentoml_internals import deployment_hooks, prepare_task_store, resolve_dependency

if TYPE_CHECKING:
    from .._replica.calls import CallTarget


def load_service(
    source: BentoSource, service_name: str, dependencies: Mapping[str, CallTarget]
) -> Any:
    """Service ``service_name`` of the Bento, ready to instantiate, in this Ray worker.

    Its ``bentoml.depends(...)`` attributes that name a service in ``dependencies`` call it
    over that handle (``ServiceProxy``); any other stays BentoML's: an external one its
    HTTP client, an internal one a local instance. Runs on the worker's event loop (the
    proxies' blocking calls go through it).
    """
    root = source.load()
    service = root if root.name == service_name else root.find_dependent_by_name(service_name)
    for dependency in service.dependencies.values():
        # External dependencies (url=..., deployment=...) keep BentoML's HTTP client.
        external = dependency.url or dependency.deployment
        if dependency.on is not None and not external and dependency.on.name in dependencies:
            from .proxy import ServiceProxy  # here: its ray.serve import costs an actor a second

            target = dependencies[dependency.on.name]
            resolve_dependency(dependency, ServiceProxy(dependency.on, target))
    # ``bentoml serve`` runs these once, before its workers start; on Ray each replica
    # may be on another node, so each runs them before loading the service.
    for hook in deployment_hooks(service):
        hook()
    if service.needs_task_db():
        prepare_task_store()
    service.inject_config()
    return service
