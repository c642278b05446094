"""Declaring Ray Serve deployments: unique names, the Bento's runtime_env, Ray's own checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Deployment

from ._bento_source import BentoSource
from ._errors import InvalidDeploymentConfig
from ._runtime_env import merge_runtime_env


class DeploymentDeclarer:
    """Declares the deployments of one application, refusing two with the same name."""

    def __init__(self, source: BentoSource) -> None:
        self.source = source
        self.declared: dict[str, str] = {}

    def declare(
        self,
        cls: type,
        default_name: str,
        options: Mapping[str, Any],
        what: str,
        env_vars: Mapping[str, str] | None = None,
    ) -> Deployment:
        """``serve.deployment(cls, ...)`` with the Bento's environment merged in.

        The Bento's runtime_env (its bentofile's env vars, and its requirements when they
        are to be installed) and ``env_vars`` (derived from the service) go under the user's
        own ``runtime_env``: the user's values win, and fields that cannot be merged raise.
        (The Bento itself reaches the nodes apart from it: ``_bento_shipping``.)
        """
        options = dict(options)
        name = options.pop("name", default_name)
        if not isinstance(name, str) or not name:
            raise InvalidDeploymentConfig(
                f"name of {what} must be a non-empty string, not {name!r}."
            )
        if name in self.declared:
            raise InvalidDeploymentConfig(
                f"{what} and {self.declared[name]} would both be named {name!r}; "
                "names must be unique."
            )
        self.declared[name] = what

        actor_options = dict(options.get("ray_actor_options") or {})
        derived = dict(self.source.runtime_env)
        derived["env_vars"] = {**(derived.get("env_vars") or {}), **(env_vars or {})}
        runtime_env = merge_runtime_env(derived, actor_options.get("runtime_env"), what)
        if runtime_env:
            actor_options["runtime_env"] = runtime_env
        options["ray_actor_options"] = actor_options
        try:
            return serve.deployment(name=name, **options)(cls)
        except Exception as exc:  # Ray raises TypeError, ValueError or pydantic's errors
            raise InvalidDeploymentConfig(f"Ray rejects the options of {what}: {exc}") from exc
