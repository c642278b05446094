"""A deployment's runtime_env: what the Bento needs, merged under what the user gave.

The Bento declares environment variables (bentofile ``envs``, a 1.2+ service's ``envs``)
and Python requirements (``env/python/requirements.txt``); these become Ray runtime_env
``env_vars`` and, when asked, ``pip``. The user's own ``ray_actor_options["runtime_env"]``
is kept whole: their ``env_vars`` win over derived ones, and a field that cannot hold
both (a ``pip`` of the user's and the Bento's requirements) raises instead of dropping
one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import InvalidArgument

#: runtime_env fields that each choose the replica's Python packages; Ray takes one.
_PACKAGE_FIELDS = ("pip", "uv", "conda", "container", "image_uri")


def bento_requirements(bento_path: str) -> list[str]:
    """The Bento's ``requirements.txt`` lines, as Ray's ``pip`` field takes them.

    Option lines (``--extra-index-url ...``) stay: Ray hands the list to pip as a
    requirements file. Local wheels a Bento bundles are not shipped with it, so a line
    that points at one would fail on another node; those are refused here.
    """
    path = Path(bento_path) / "env" / "python" / "requirements.txt"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    packages = [line for line in lines if line and not line.startswith("#")]
    local = [line for line in packages if "wheels/" in line or line.startswith(("./", "/"))]
    if local:
        raise InvalidArgument(
            f"install_requirements=True cannot install the Bento's local packages {local} "
            "on other nodes; install them in the cluster's image instead."
        )
    return packages


def derived_runtime_env(env_vars: Mapping[str, str], pip: list[str] | None) -> dict[str, Any]:
    """The runtime_env fields a Bento brings, before the user's are merged in."""
    runtime_env: dict[str, Any] = {}
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    if pip:
        runtime_env["pip"] = list(pip)
    return runtime_env


def merge_runtime_env(
    derived: Mapping[str, Any],
    user: object,
    what: str,
    service_env_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``user``'s runtime_env with ``derived`` merged under it; ``what`` names the deployment.

    ``service_env_vars`` (a 1.2+ service's own ``envs``) go over the Bento's, under the user's.
    """
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        raise InvalidArgument(
            f"ray_actor_options.runtime_env of {what} must be a mapping, not {type(user).__name__}."
        )
    merged = dict(user)
    user_env = merged.get("env_vars") or {}
    if not isinstance(user_env, Mapping):
        raise InvalidArgument(
            f"runtime_env.env_vars of {what} must map names to strings, not "
            f"{type(user_env).__name__}."
        )
    env_vars = {**(derived.get("env_vars") or {}), **(service_env_vars or {}), **user_env}
    if env_vars:
        merged["env_vars"] = env_vars
    if derived.get("pip"):
        taken = [field for field in _PACKAGE_FIELDS if merged.get(field)]
        if taken:
            raise InvalidArgument(
                f"install_requirements=True makes the Bento's requirements the runtime_env "
                f"'pip' of {what}, whose runtime_env already sets {taken[0]!r}; Ray takes "
                "one of them. Drop one, or put the Bento's requirements in yours."
            )
        merged["pip"] = derived["pip"]
    return merged
