"""Where a replica loads the BentoML service from, decided once in the driver.

``deployment()`` resolves its target to a ``BentoSource`` before anything deploys: a tag
like ``iris_classifier:latest`` becomes the exact version found in the store, so every
replica, including one started hours later by the autoscaler, runs the same Bento even if
a newer one is built meanwhile. A service object that did not come from a Bento is
re-imported from its module in each replica, as ``bentoml serve`` does in development.
"""

from __future__ import annotations

import inspect
import pathlib
from dataclasses import dataclass
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from ._bentoml_internals import LegacyService, NewService, bentoml_home
from ._errors import BentoNotFound, InvalidDeploymentConfig


@dataclass(frozen=True)
class BentoSource:
    """A picklable recipe for loading the service inside a Ray replica.

    For a 1.2+ Bento, every deployment loads the root service and picks its own service
    from the dependency graph by name, as ``bentoml serve``'s workers do.
    """

    #: A Bento directory, or a service import string (``module:attribute``).
    identifier: str
    #: Where ``identifier`` is importable from, for import strings.
    working_dir: str | None
    #: The BentoML home of the driver, whose model store the service's models come from.
    bentoml_home: str
    #: For names and messages: the Bento tag, or the import string.
    display_name: str

    def load(self) -> Any:
        """Load the service, in the driver (to check options) or in a replica.

        ``reload`` matters when one process loads several Bentos whose service modules
        share a name (``service.py`` is the usual one): without it, Python's module cache
        would hand back the first Bento's service.
        """
        return bentoml.load(self.identifier, working_dir=self.working_dir, reload=True)

    @property
    def env_vars(self) -> dict[str, str]:
        """Environment that replicas need to find this Bento's models."""
        return {"BENTOML_HOME": self.bentoml_home}


def resolve_target(target: object) -> tuple[BentoSource, Any]:
    """Resolve ``deployment()``'s target to a source and the service loaded in the driver.

    The service is loaded here too, so that runner names, methods and APIs can be checked
    before anything deploys.
    """
    if isinstance(target, LegacyService | NewService):
        return _source_of_service(target), target
    if isinstance(target, str | bentoml.Tag):
        bento = _get_bento(target)
    elif isinstance(target, bentoml.Bento):
        bento = target
    else:
        raise InvalidDeploymentConfig(
            "deployment() takes a Bento tag (str or bentoml.Tag), a bentoml.Bento, a "
            "@bentoml.service class, or a loaded bentoml.legacy.Service, not "
            f"{type(target).__name__}."
        )
    source = BentoSource(
        identifier=str(bento.path),
        working_dir=None,
        bentoml_home=bentoml_home(),
        display_name=str(bento.tag),
    )
    return source, source.load()


def _get_bento(tag: str | bentoml.Tag) -> bentoml.Bento:
    try:
        return bentoml.get(tag)
    except NotFound as exc:
        raise BentoNotFound(
            f"Bento {str(tag)!r} is not in the BentoML store at {bentoml_home()}/bentos. "
            "Build it with `bentoml build`, or point BENTOML_HOME at the store that has it "
            "(`bentoml list` shows what is there)."
        ) from exc
    except ValueError as exc:  # a malformed tag string
        raise BentoNotFound(f"{str(tag)!r} is not a valid Bento tag: {exc}") from exc


def _source_of_service(svc: Any) -> BentoSource:
    home = bentoml_home()
    if svc.bento is not None:
        return BentoSource(str(svc.bento.path), None, home, str(svc.bento.tag))
    try:
        if isinstance(svc, NewService):
            import_str, working_dir = svc.import_string, _module_root(svc.inner)
        else:
            import_str, working_dir = svc.get_service_import_origin()
    except Exception as exc:
        raise InvalidDeploymentConfig(
            f"Service {svc.name!r} cannot be re-imported inside Ray replicas: {exc}"
        ) from exc
    return BentoSource(import_str, working_dir, home, import_str)


def _module_root(cls: type) -> str:
    """The folder from which ``cls``'s module imports under its own name."""
    module = inspect.getmodule(cls)
    if module is None or not getattr(module, "__file__", None):
        raise ValueError(f"{cls.__qualname__} is not defined in a module file")
    depth = module.__name__.count(".") + (module.__file__ or "").endswith("__init__.py")
    return str(pathlib.Path(module.__file__ or "").resolve().parents[depth])
