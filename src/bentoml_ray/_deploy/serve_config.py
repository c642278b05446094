"""A Bento as a Ray Serve config file, for ``serve deploy`` (and KubeRay: ``kuberay``).

``serve run module:app`` needs a driver process that stays up; production clusters are
instead given a Serve config (``serve deploy``, KubeRay's ``serveConfigV2``), whose
``import_path`` names an *application builder* that Serve's controller calls with the
config's ``args``. ``application_builder`` is that builder: ``args`` are ``deployment()``'s
keywords plus ``target``, so everything ``deployment()`` takes can be written in YAML.

The config carries the exact Bento version (``iris_classifier:abc123``, never ``:latest``)
so that a redeploy of the same file always runs the same Bento, and it lists the
deployments with the scaling options the user gave, so that operators see the names and
can change ``num_replicas`` and the like in the file without touching Python.

Nothing here needs a running Ray: the config is checked by building the application once
(``deployment()`` does every check) before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ray.serve import Application

from .._application import deployment, plan_layout
from .._bento.runtime_env import bento_requirements
from .._bento.source import bento_env_vars, get_bento
from .._errors import InvalidArgument
from .._options import check_mapping, check_route_prefix
from .options_file import check_options
from .yaml_text import dump_yaml

#: The ``import_path`` of every application this module writes.
APPLICATION_BUILDER = "bentoml_ray:application_builder"

#: Options that name a place the *cluster* reads; checks on the build machine skip them.
_CLUSTER_SIDE_OPTIONS = frozenset({"bento_uri"})


def application_builder(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: ``import_path: bentoml_ray:application_builder``.

    ``args`` is ``{"target": "<bento tag>", **deployment() keywords}``, as a Serve config's
    ``args`` gives it; the same keys as a ``bentoml-ray`` options file are allowed, checked
    the same way, then ``deployment(**args)`` builds the application.
    """
    if not isinstance(args, Mapping):
        raise InvalidArgument(
            f"The application's args must be a mapping, not {type(args).__name__}."
        )
    options = dict(args)
    target = options.pop("target", None)
    if not isinstance(target, str) or not target:
        raise InvalidArgument(
            "The application's args need 'target': the Bento tag to serve, such as "
            f"'iris_classifier:abc123', not {target!r}."
        )
    return deployment(target, **check_options(options, "The application's args"))


@dataclass(frozen=True)
class ServePlan:
    """A Bento resolved and its options checked: everything a config or a deploy needs."""

    #: The exact Bento version, ``name:version``.
    tag: str
    #: The root service's name: the application's default name.
    service_name: str
    #: Where Serve routes the application (``service_deployment_config['route_prefix']``).
    route_prefix: str
    #: ``deployment()`` keywords for the builder, ``route_prefix`` taken out (Serve applies it).
    options: dict[str, Any]
    #: ``deployments:`` entries: each configured deployment's name and scaling options.
    deployments: list[dict[str, Any]]
    #: Environment the Bento declares (``envs`` in its bentofile).
    env_vars: dict[str, str] = field(default_factory=dict)
    #: The Bento's Python requirements, when ``install_requirements`` is set.
    requirements: list[str] = field(default_factory=list)
    #: The application as checked on this machine (``bento_uri`` aside).
    checked_app: Application | None = field(default=None, compare=False, repr=False)

    @property
    def args(self) -> dict[str, Any]:
        """The builder's ``args``: the exact tag and the options."""
        return {"target": self.tag, **self.options}

    @property
    def runtime_env(self) -> dict[str, Any]:
        """The application-level runtime_env: it also applies to Serve's build task."""
        runtime_env: dict[str, Any] = {}
        if self.env_vars:
            runtime_env["env_vars"] = dict(self.env_vars)
        if self.requirements:
            runtime_env["pip"] = list(self.requirements)
        return runtime_env

    def with_bento_uri(self, uri: str) -> ServePlan:
        return replace(self, options={**self.options, "bento_uri": uri})

    def application(self) -> Application:
        """The application to ``serve.run``, exactly as the builder would make it."""
        if self.checked_app is not None and not _CLUSTER_SIDE_OPTIONS & self.options.keys():
            return self.checked_app
        return application_builder(self.args)


def plan_application(
    tag: str,
    options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServePlan:
    """Resolve ``tag`` in the local store and check ``options`` by building the app once.

    ``environ`` fills a service's ``envs`` without a value, as ``deployment()`` does with
    the driver's: the CLI gives its own when it deploys, none when it writes a config
    (the cluster's builder fills them there, and no value of this shell's lands in a file).

    ``route_prefix`` moves from ``service_deployment_config`` to Serve's own route prefix:
    inside the app it would be applied a second time under Serve's, and a shared cluster
    needs distinct route prefixes per application anyway.
    """
    checked = _plain(check_options(options, "The options"), "options")
    bento = get_bento(tag)
    exact = str(bento.tag)

    service_config = dict(
        check_mapping(checked.get("service_deployment_config"), "service_deployment_config")
    )
    route_prefix = check_route_prefix(service_config.pop("route_prefix", None))
    if "service_deployment_config" in checked:
        if service_config:
            checked["service_deployment_config"] = service_config
        else:
            del checked["service_deployment_config"]

    local = {key: value for key, value in checked.items() if key not in _CLUSTER_SIDE_OPTIONS}
    layout = plan_layout(bento, local, environ)  # the Bento resolved, its service imported: once
    return ServePlan(
        tag=exact,
        service_name=layout.service_name,
        route_prefix=route_prefix,
        options=checked,
        deployments=layout.configured_deployments(),
        env_vars=bento_env_vars(bento),
        requirements=(
            bento_requirements(str(bento.path)) if checked.get("install_requirements") else []
        ),
        checked_app=layout.bind(),
    )


def config_of_plan(
    plan: ServePlan, *, name: str | None = None, http_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Serve config of an already checked ``ServePlan``."""
    application: dict[str, Any] = {
        "name": name or plan.service_name,
        "route_prefix": plan.route_prefix,
        "import_path": APPLICATION_BUILDER,
        "args": plan.args,
        "runtime_env": plan.runtime_env,
        "deployments": plan.deployments,
    }
    config: dict[str, Any] = {}
    if http_options:
        config["http_options"] = dict(http_options)
    config["applications"] = [application]
    return config


def config_yaml(config: Mapping[str, Any], tag: str) -> str:
    """The Serve config as a YAML file, with a header saying how to deploy it."""
    header = (
        f"# Ray Serve config for the Bento {tag}, written by `bentoml-ray build`.\n"
        "# Deploy: serve deploy <this file> --address http://<head>:8265\n"
        "# (Ray's `serve deploy` takes the Ray dashboard's URL; bentoml-ray's own --address\n"
        "# is the cluster's GCS address, <head>:6379, as `ray start --address` takes it.)\n"
        "# Every node needs bentoml-ray installed, and the Bento's requirements unless\n"
        "# install_requirements is set; args.bento_uri must be readable from every node.\n"
    )
    return header + dump_yaml(config)


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain YAML data (dicts, lists, scalars), or a message saying what is not."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise InvalidArgument(
        f"{where} is a {type(value).__name__}, which a Serve config (YAML) cannot hold; "
        "give it in Python with bentoml_ray.deployment() instead."
    )
