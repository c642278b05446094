"""The options files of the CLI, and the ``args`` of a Serve config: keyword arguments in YAML.

The CLI (``bentoml-ray serve/deploy/build --config FILE``) and a Serve config file's ``args``
both carry the keyword arguments of ``deployment()`` as plain YAML, so that one file works
on a laptop, in ``serve deploy`` and in a KubeRay ``RayService``. The allowed keys are read
from ``deployment()``'s own signature, so an argument added there is accepted here at once;
a typo is refused before anything deploys, with the file, the key and what is allowed.
The Bento itself (``target``) never comes from the file: it is the command line's TAG, so
one options file serves every version of a Bento.

``bentoml-ray batch --config FILE`` takes ``map_api()``'s keywords the same way: its own
and the Ray Data options it passes on; the Dataset, the Bento and the API come from the
command line.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import yaml

from .._application import deployment
from .._errors import InvalidArgument, did_you_mean


def allowed_options() -> frozenset[str]:
    """``deployment()``'s keyword arguments, ``target`` excepted."""
    return frozenset(inspect.signature(deployment).parameters) - {"target"}


def check_options(options: object, where: str) -> dict[str, Any]:
    """Return ``options`` as a dict once it is a mapping of known ``deployment()`` keywords.

    ``where`` names the source in messages (``options file 'x.yaml'``, ...). Values are
    checked by ``deployment()`` itself when it runs.
    """
    return _known_keys(options, where, "deployment()", allowed_options(), {"target": "TAG"})


def read_options_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML options file of ``deployment()`` keywords; an empty file means none."""
    where = f"Options file {os.fspath(path)!r}"
    return check_options(_read_yaml(path, where), where)


def map_api_options() -> frozenset[str]:
    """``map_api()``'s keyword arguments and the Ray Data options it passes on."""
    from .._offline.map_api import MAP_API_KEYWORDS, ray_data_options

    return MAP_API_KEYWORDS | ray_data_options()


def read_map_api_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file of ``map_api()`` keywords (``bentoml-ray batch --config``)."""
    where = f"Options file {os.fspath(path)!r}"
    on_the_command_line = {"dataset": "--input", "target": "TAG", "api": "--api"}
    return _known_keys(
        _read_yaml(path, where), where, "map_api()", map_api_options(), on_the_command_line
    )


def _known_keys(
    options: object,
    where: str,
    function: str,
    allowed: frozenset[str],
    on_the_command_line: Mapping[str, str],
) -> dict[str, Any]:
    """``options`` as a dict once it maps keys of ``allowed`` (None: no options).

    A key that the command line gives (``on_the_command_line``: key -> its argument) is
    refused, naming that argument.
    """
    listing = ", ".join(sorted(allowed))
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidArgument(
            f"{where} must be a mapping of {function} arguments, not "
            f"{type(options).__name__}. Allowed keys: {listing}."
        )
    for key in options:
        if key in on_the_command_line:
            raise InvalidArgument(
                f"{where} sets {key!r}, which comes from the command line "
                f"({on_the_command_line[key]}), not from the options. Allowed keys: {listing}."
            )
        if not isinstance(key, str) or key not in allowed:
            hint = did_you_mean(key, allowed) if isinstance(key, str) else ""
            raise InvalidArgument(
                f"{where} has an unknown key {key!r}.{hint} Allowed keys: {listing}."
            )
    return dict(options)


def _read_yaml(path: str | os.PathLike[str], where: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as exc:
        raise InvalidArgument(f"{where} cannot be read: {exc.strerror or exc}.") from exc
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{where} is not valid YAML: {_one_line(exc)}") from exc


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())
