"""The options file of the CLI, and the ``args`` of a Serve config: ``deployment()``'s keywords.

The CLI (``bentoml-ray serve/deploy/build --config FILE``) and a Serve config file's ``args``
both carry the keyword arguments of ``deployment()`` as plain YAML, so that one file works
on a laptop, in ``serve deploy`` and in a KubeRay ``RayService``. The allowed keys are read
from ``deployment()``'s own signature, so an argument added there is accepted here at once;
a typo is refused before anything deploys, with the file, the key and what is allowed.
The Bento itself (``target``) never comes from the file: it is the command line's TAG, so
one options file serves every version of a Bento.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import yaml

from .._application import deployment
from .._errors import InvalidDeploymentConfig, did_you_mean


def allowed_options() -> frozenset[str]:
    """``deployment()``'s keyword arguments, ``target`` excepted."""
    return frozenset(inspect.signature(deployment).parameters) - {"target"}


def check_options(options: object, where: str) -> dict[str, Any]:
    """Return ``options`` as a dict once it is a mapping of known ``deployment()`` keywords.

    ``where`` names the source in messages (``options file 'x.yaml'``, ...). Values are
    checked by ``deployment()`` itself when it runs.
    """
    allowed = allowed_options()
    listing = ", ".join(sorted(allowed))
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidDeploymentConfig(
            f"{where} must be a mapping of deployment() arguments, not "
            f"{type(options).__name__}. Allowed keys: {listing}."
        )
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key == "target":
            raise InvalidDeploymentConfig(
                f"{where} sets 'target'; the Bento tag comes from the command line (TAG), "
                f"not from the options. Allowed keys: {listing}."
            )
        if not isinstance(key, str) or key not in allowed:
            hint = did_you_mean(key, allowed) if isinstance(key, str) else ""
            raise InvalidDeploymentConfig(
                f"{where} has an unknown key {key!r}.{hint} Allowed keys: {listing}."
            )
        checked[key] = value
    return checked


def read_options_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML options file; an empty file means no options."""
    where = f"Options file {os.fspath(path)!r}"
    try:
        with open(path, encoding="utf-8") as stream:
            content = yaml.safe_load(stream)
    except OSError as exc:
        raise InvalidDeploymentConfig(f"{where} cannot be read: {exc.strerror or exc}.") from exc
    except yaml.YAMLError as exc:
        raise InvalidDeploymentConfig(f"{where} is not valid YAML: {_one_line(exc)}") from exc
    return check_options(content, where)


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())
