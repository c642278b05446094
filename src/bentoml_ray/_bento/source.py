"""Where a replica loads the BentoML service from, decided once in the driver.

``deployment()`` resolves its target to a ``BentoSource`` before anything deploys: a tag
like ``iris_classifier:latest`` becomes the exact version found in the store, so every
replica, including one started hours later by the autoscaler, runs the same Bento even if
a newer one is built meanwhile. A service object that did not come from a Bento is
re-imported from its module in each replica, as ``bentoml serve`` does in development.
How the Bento reaches replicas on other nodes is ``shipping``'s part.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import bentoml
import ray
from bentoml.exceptions import BentoMLException, NotFound

from .._bentoml_internals import LegacyService, NewService, bentoml_home
from .._errors import BentoNotFound, InvalidArgument, InvalidBentoTag
from .import_metrics import metrics_of_this_import
from .runtime_env import bento_requirements, derived_runtime_env
from .shipping import fetch_bento, fetch_shipped, package_for_shipping, start_depot


@dataclass(frozen=True)
class BentoSource:
    """A picklable recipe for loading the service inside a Ray replica.

    For a 1.2+ Bento, every deployment loads the root service and picks its own service
    from the dependency graph by name, as ``bentoml serve``'s workers do.
    """

    #: A Bento folder as the driver sees it, or a service import string (``module:attr``).
    identifier: str
    #: Where ``identifier`` is importable from, for import strings.
    working_dir: str | None
    #: For names and messages: the Bento tag, or the import string.
    display_name: str
    #: The exact Bento tag, when there is a Bento.
    tag: str | None = None
    #: The self-contained Bento folder on the driver's node that replicas are shipped.
    package: str | None = None
    #: The node whose ``BentoDepot`` ships ``package``; set when ``serve.run`` sends this.
    depot_node: str | None = None
    #: Where every node fetches the Bento from, instead of shipping it.
    bento_uri: str | None = None
    #: runtime_env fields every deployment of this Bento gets (see ``runtime_env``).
    runtime_env: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Tells one ``deployment()`` of an import string from another (a Bento has its tag).
    build: str = field(default_factory=lambda: uuid.uuid4().hex[:12], compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled in the driver by ``serve.run`` (or Ray Data, for ``map_api``'s actors):
        start the depot that replicas and actors fetch the Bento from.

        This is the one moment the driver is sure to be connected to the cluster the
        replicas will run on (``deployment()`` needs no Ray, and ``serve run`` imports
        the application before it connects).
        """
        depot_node = self.depot_node
        if self.package is not None and depot_node is None and ray.is_initialized():
            depot_node = start_depot()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(depot_node=depot_node, runtime_env={})
        return (_rebuild_source, (values,))

    @property
    def version(self) -> str:
        """What the replicas of this source stamp their calls with (``_replica.versions``)."""
        return self.tag or f"{self.display_name}@{self.build}"

    def load(self) -> Any:
        """Load the service, in the driver (to check options) or in a replica.

        ``reload`` matters when one process loads several Bentos whose service modules
        share a name (``service.py`` is the usual one): without it, Python's module cache
        would hand back the first Bento's service. Each load re-imports the service's
        modules, so the metrics they make at import are made again (``import_metrics``).
        """
        with metrics_of_this_import():
            return bentoml.load(self.bento_folder(), working_dir=self.working_dir, reload=True)

    def bento_folder(self) -> str:
        """This node's copy of the Bento (or the import string, which needs none)."""
        tag = None if self.tag is None else bentoml.Tag.from_taglike(self.tag)
        if self.bento_uri is not None:
            return str(fetch_bento(self.bento_uri, tag))
        if self.package is not None and self.depot_node is not None and tag is not None:
            return str(fetch_shipped(self.package, self.depot_node, tag))
        if tag is not None and not os.path.isdir(self.identifier):
            raise BentoNotFound(
                f"Bento {tag} is not on this node, and it was not shipped: the application "
                "was not sent by serve.run from a driver connected to this cluster. Export "
                "it (`bentoml export`) where every node can read it and give bento_uri=."
            )
        return self.identifier


def _rebuild_source(values: dict[str, Any]) -> BentoSource:
    return BentoSource(**values)


def resolve_target(
    target: object, bento_uri: str | None = None, install_requirements: bool = False
) -> tuple[BentoSource, Any]:
    """Resolve ``deployment()``'s target to a source and the service loaded in the driver.

    The service is loaded here too, so that runner names, methods and APIs can be checked
    before anything deploys.
    """
    if bento_uri is not None:
        return _source_from_uri(target, bento_uri, install_requirements)
    if isinstance(target, LegacyService | NewService):
        if target.bento is None:
            if install_requirements:
                raise InvalidArgument(
                    "install_requirements=True needs a Bento (its requirements.txt); "
                    f"service {target.name!r} was not loaded from one."
                )
            return _source_of_service(target), target
        bento = target.bento
        return _source_of_bento(bento, install_requirements), target
    if isinstance(target, str | bentoml.Tag):
        bento = get_bento(target)
    elif isinstance(target, bentoml.Bento):
        bento = target
    else:
        raise InvalidArgument(
            "deployment() takes a Bento tag (str or bentoml.Tag), a bentoml.Bento, a "
            "@bentoml.service class, or a loaded bentoml.legacy.Service, not "
            f"{type(target).__name__}."
        )
    source = _source_of_bento(bento, install_requirements)
    return source, source.load()


def _source_of_bento(bento: bentoml.Bento, install_requirements: bool) -> BentoSource:
    """A Bento from the driver's store, shipped to the nodes through Ray when it fits."""
    pip = bento_requirements(str(bento.path)) if install_requirements else None
    return BentoSource(
        identifier=str(bento.path),
        working_dir=None,
        display_name=str(bento.tag),
        tag=str(bento.tag),
        package=str(package_for_shipping(bento)),
        runtime_env=derived_runtime_env(bento_env_vars(bento), pip),
    )


def _source_from_uri(
    target: object, bento_uri: str, install_requirements: bool
) -> tuple[BentoSource, Any]:
    """A Bento every node fetches from ``bento_uri``; the driver's store is not used."""
    if not isinstance(bento_uri, str) or not bento_uri:
        raise InvalidArgument(f"bento_uri must be a non-empty string, not {bento_uri!r}.")
    if not isinstance(target, str | bentoml.Tag):
        raise InvalidArgument(
            "With bento_uri, the target is the Bento's tag (str or bentoml.Tag), not "
            f"{type(target).__name__}."
        )
    tag = parse_tag(target)
    folder = fetch_bento(bento_uri, tag)
    bento = bentoml.Bento.from_path(str(folder))
    pip = bento_requirements(str(folder)) if install_requirements else None
    source = BentoSource(
        identifier=str(folder),
        working_dir=None,
        display_name=str(bento.tag),
        tag=str(bento.tag),
        bento_uri=bento_uri,
        runtime_env=derived_runtime_env(bento_env_vars(bento), pip),
    )
    return source, source.load()


def bento_env_vars(bento: bentoml.Bento) -> dict[str, str]:
    """The bentofile's ``envs`` that have a value, but build-stage ones.

    The others are the deployer's to give; a 1.2+ service's own value-less ones are taken
    from the driver's environment, service by service
    (``_services.service_options.service_env_vars``). BentoML's "no value" is "".
    """
    return {
        env.name: str(env.value)
        for env in bento.info.envs
        if env.value and getattr(env, "stage", "all") != "build"
    }


def parse_tag(tag: str | bentoml.Tag) -> bentoml.Tag:
    """``tag`` as a ``bentoml.Tag``; ``InvalidBentoTag`` if BentoML cannot parse it."""
    try:
        return bentoml.Tag.from_taglike(tag)
    except (ValueError, BentoMLException) as exc:  # BentoML raises both for bad tags
        raise InvalidBentoTag(
            f"{str(tag)!r} is not a valid Bento tag ({exc}); a tag is name[:version], such "
            "as iris_classifier:latest."
        ) from exc


def get_bento(tag: str | bentoml.Tag) -> bentoml.Bento:
    parsed = parse_tag(tag)
    try:
        return bentoml.get(parsed)
    except NotFound as exc:
        raise BentoNotFound(
            f"Bento {str(tag)!r} is not in the BentoML store at {bentoml_home()}/bentos. "
            "Build it with `bentoml build`, or point BENTOML_HOME at the store that has it "
            "(`bentoml list` shows what is there)."
        ) from exc


def _source_of_service(svc: Any) -> BentoSource:
    """A service not from a Bento: re-imported in each replica from the same folder."""
    try:
        if isinstance(svc, NewService):
            import_str, working_dir = svc.import_string, _module_root(svc.inner)
        else:
            import_str, working_dir = svc.get_service_import_origin()
    except Exception as exc:
        raise InvalidArgument(
            f"Service {svc.name!r} cannot be re-imported inside Ray replicas: {exc}"
        ) from exc
    # Models come from the driver's store, which replicas on its machine can read.
    runtime_env = derived_runtime_env({"BENTOML_HOME": bentoml_home()}, None)
    return BentoSource(import_str, working_dir, import_str, runtime_env=runtime_env)


def _module_root(cls: type) -> str:
    """The folder from which ``cls``'s module imports under its own name."""
    module = inspect.getmodule(cls)
    if module is None or not getattr(module, "__file__", None):
        raise ValueError(f"{cls.__qualname__} is not defined in a module file")
    depth = module.__name__.count(".") + (module.__file__ or "").endswith("__init__.py")
    return str(pathlib.Path(module.__file__ or "").resolve().parents[depth])
