"""``deployment()``: from a Bento to a Ray Serve application, every check done first.

The Bento is resolved and its service loaded once (``_bento.source``); runner-based
Bentos are laid out by ``_runners.layout``, 1.2+ Bentos by ``_services.layout``; the
layout is then declared and bound (``_layout``). Nothing here needs a running Ray: the
result is an unbuilt ``Application`` that ``serve.run`` or ``serve run module:attr``
deploys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from ._bento.source import resolve_target
from ._bentoml_internals import LegacyService
from ._errors import InvalidArgument
from ._layout import Layout
from ._ray_compat import check_environment
from ._runners.layout import runner_layout
from ._services.layout import service_layout


def deployment(
    target: Any,
    service_deployment_config: Mapping[str, Any] | None = None,
    runner_deployment_config: Mapping[str, Mapping[str, Any]] | None = None,
    enable_batching: bool | None = None,
    batching_config: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    *,
    runners_deployment_config_map: Mapping[str, Mapping[str, Any]] | None = None,
    bento_uri: str | None = None,
    install_requirements: bool = False,
) -> Application:
    """Turn a Bento into a Ray Serve application.

    A runner-based Bento becomes one API-server deployment and one per runner; a 1.2+
    Bento becomes one deployment per service in its dependency graph, the root serving HTTP.

    Args:
        target: a Bento tag (``str`` or ``bentoml.Tag``), a ``bentoml.Bento``, a loaded
            ``bentoml.legacy.Service``, or a ``@bentoml.service`` class.
        service_deployment_config: ``serve.deployment`` options for the API server (the
            root service), plus ``route_prefix`` (the HTTP path it is served under).
        runner_deployment_config: runner name (or, for 1.2+, dependency service name) ->
            ``serve.deployment`` options for it.
        enable_batching: serve batchable methods through ``serve.batch``. Unset, runner
            methods are not batched (as in BentoML's original) and 1.2+ APIs declared
            ``batchable=True`` are; ``False`` turns both off.
        batching_config: runner (or service) name -> method (or API) name -> ``serve.batch``
            options.
        runners_deployment_config_map: BentoML 1.4's name for ``runner_deployment_config``.
        bento_uri: where every node (and this driver) fetches the Bento from: an archive
            made by ``bentoml export`` at any fsspec URI (``s3://``, ``gs://``,
            ``file://``, a path) or a Bento folder on a shared filesystem. Unset, the Bento
            comes from this driver's store and Ray ships it to the nodes.
        install_requirements: install the Bento's Python requirements in every replica
            (runtime_env ``pip``). Off by default: installs are slow, and the nodes
            usually have them.

    Returns:
        An application for ``serve.run(app)`` or ``serve run module:attr``.

    Raises:
        InvalidArgument: an option, runner, method or value that is not allowed; the
            message names it and what is allowed.
        InvalidBentoTag: the tag is malformed (an ``InvalidArgument`` too).
        BentoNotFound: the tag is not in the BentoML store (or at ``bento_uri``).
        UnsupportedEnvironment: Ray Serve is known not to work in this environment (a
            Ray older than 2.57 with protobuf 7); the message says what to install.
    """
    check_environment()
    return plan_layout(
        target,
        {
            "service_deployment_config": service_deployment_config,
            "runner_deployment_config": runner_deployment_config,
            "enable_batching": enable_batching,
            "batching_config": batching_config,
            "runners_deployment_config_map": runners_deployment_config_map,
            "bento_uri": bento_uri,
            "install_requirements": install_requirements,
        },
        environ=os.environ,
    ).bind()


def plan_layout(
    target: Any, options: Mapping[str, Any], environ: Mapping[str, str] | None
) -> Layout:
    """Every check of ``deployment(target, **options)``, and the deployments it makes.

    The Serve config export reads the layout; ``deployment()`` binds it. ``environ`` fills
    a service's ``envs`` entries that have no value (``deployment()``: the driver's
    environment); None leaves them to wherever the application is built (a Serve config's
    builder runs in the cluster), so no value of this shell's is written into a file.
    """
    service_deployment_config = options.get("service_deployment_config")
    runner_deployment_config = options.get("runner_deployment_config")
    runners_deployment_config_map = options.get("runners_deployment_config_map")
    enable_batching = options.get("enable_batching")
    install_requirements = options.get("install_requirements", False)
    if runners_deployment_config_map is not None:
        if runner_deployment_config is not None:
            raise InvalidArgument(
                "Give runner options once: runner_deployment_config or its older name "
                "runners_deployment_config_map, not both."
            )
        runner_deployment_config = runners_deployment_config_map
    if enable_batching is not None and not isinstance(enable_batching, bool):
        raise InvalidArgument(
            f"enable_batching must be True, False or None, not {enable_batching!r}."
        )
    if not isinstance(install_requirements, bool):
        raise InvalidArgument(
            f"install_requirements must be True or False, not {install_requirements!r}."
        )
    source, svc = resolve_target(target, options.get("bento_uri"), install_requirements)
    if isinstance(svc, LegacyService):
        return runner_layout(
            source,
            svc,
            service_deployment_config,
            runner_deployment_config,
            bool(enable_batching),
            options.get("batching_config"),
        )
    return service_layout(
        source,
        svc,
        service_deployment_config,
        runner_deployment_config,
        enable_batching is not False,
        options.get("batching_config"),
        environ,
    )
