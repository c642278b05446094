"""A Bento as a Ray Serve config file and a KubeRay ``RayService``, for ``serve deploy``.

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

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import bentoml
import ray
import yaml
from ray.serve import Application

from ._application import deployment
from ._bento_source import bento_env_vars, get_bento
from ._bentoml_internals import LegacyService
from ._errors import InvalidDeploymentConfig
from ._options import check_embedded, check_mapping, check_route_prefix
from ._options_file import check_options
from ._runner_application import api_server_deployment_name, runner_deployment_name
from ._runtime_env import bento_requirements
from ._service_application import service_deployment_name

#: The ``import_path`` of every application this module writes.
APPLICATION_BUILDER = "bentoml_ray:application_builder"

#: The per-deployment options a config's ``deployments:`` shows, for operators to change.
SCALING_OPTIONS = ("num_replicas", "autoscaling_config", "max_ongoing_requests")

#: Options that name a place the *cluster* reads; checks on the build machine skip them.
_CLUSTER_SIDE_OPTIONS = frozenset({"bento_uri"})

#: KubeRay appends 6 characters to a RayService's name for its RayCluster, whose name
#: may have at most 53 (its longest service suffix is ``-serve-svc``).
_MAX_RAYSERVICE_NAME = 47


def application_builder(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: ``import_path: bentoml_ray:application_builder``.

    ``args`` is ``{"target": "<bento tag>", **deployment() keywords}``, as a Serve config's
    ``args`` gives it; the same keys as a ``bentoml-ray`` options file are allowed, checked
    the same way, then ``deployment(**args)`` builds the application.
    """
    if not isinstance(args, Mapping):
        raise InvalidDeploymentConfig(
            f"The application's args must be a mapping, not {type(args).__name__}."
        )
    options = dict(args)
    target = options.pop("target", None)
    if not isinstance(target, str) or not target:
        raise InvalidDeploymentConfig(
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


def plan_application(tag: str, options: Mapping[str, Any] | None = None) -> ServePlan:
    """Resolve ``tag`` in the local store and check ``options`` by building the app once.

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
    app = deployment(exact, **local)
    svc = bentoml.load(str(bento.path), reload=True)
    return ServePlan(
        tag=exact,
        service_name=str(svc.name),
        route_prefix=route_prefix,
        options=checked,
        deployments=_configured_deployments(svc, checked),
        env_vars=bento_env_vars(bento),
        requirements=(
            bento_requirements(str(bento.path)) if checked.get("install_requirements") else []
        ),
        checked_app=app,
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


def default_image() -> str:
    """Ray's image for the installed Ray and Python: what the cluster's Python must match."""
    return f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}"


def rayservice_name(name: str) -> str:
    """A valid RayService name (DNS-1035 label, at most 47 characters) derived from ``name``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name)  # ReviewScorer -> Review-Scorer
    label = re.sub(r"[^a-z0-9-]+", "-", words.lower())
    label = re.sub(r"^[^a-z]+", "", label)[:_MAX_RAYSERVICE_NAME]
    return label.rstrip("-") or "bento"


def rayservice_manifest(
    config: Mapping[str, Any],
    name: str | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """A KubeRay ``RayService`` (``ray.io/v1``) that runs the Serve ``config``.

    The image must contain bentoml-ray (with the Python and Ray versions of this machine),
    and the Bento's requirements unless the config installs them (``install_requirements``);
    a ``bento_uri`` in the config must be reachable from every pod (``s3://``, ``gs://``):
    a ``file://`` URI of this machine is not. ``name`` defaults to the first application's.
    """
    applications = config.get("applications") or [{}]
    metadata_name = rayservice_name(name or str(applications[0].get("name") or "bento"))
    image = image or default_image()
    # A starting point: one worker pod, each pod 2 CPUs and 8 GiB; edit the manifest to size it.
    head = {"cpu": "2", "memory": "8Gi"}
    worker = dict(head)
    ports = [("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("serve", 8000)]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": metadata_name},
        "spec": {
            "serveConfigV2": dump_yaml(config),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": image,
                                    "ports": [
                                        {"containerPort": port, "name": port_name}
                                        for port_name, port in ports
                                    ],
                                    "resources": {"limits": head, "requests": dict(head)},
                                }
                            ]
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 1,
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "ray-worker",
                                        "image": image,
                                        "resources": {
                                            "limits": worker,
                                            "requests": dict(worker),
                                        },
                                    }
                                ]
                            }
                        },
                    }
                ],
            },
        },
    }


class _PlainDumper(yaml.SafeDumper):  # type: ignore[misc]
    """YAML without anchors and aliases: a value given twice is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: Any, data: str) -> Any:
    """Multi-line strings (``serveConfigV2``) as literal blocks, readable as they are."""
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_PlainDumper.add_representer(str, _represent_str)


def dump_yaml(data: Mapping[str, Any]) -> str:
    """``data`` as block-style YAML in its own key order, for people to read and edit."""
    return str(yaml.dump(dict(data), Dumper=_PlainDumper, sort_keys=False))


def config_yaml(config: Mapping[str, Any], tag: str) -> str:
    """The Serve config as a YAML file, with a header saying how to deploy it."""
    header = (
        f"# Ray Serve config for the Bento {tag}, written by `bentoml-ray build`.\n"
        "# Deploy: serve deploy <this file> --address http://<head>:8265\n"
        "# Every node needs bentoml-ray installed, and the Bento's requirements unless\n"
        "# install_requirements is set; args.bento_uri must be readable from every node.\n"
    )
    return header + dump_yaml(config)


def manifest_yaml(manifest: Mapping[str, Any], tag: str) -> str:
    """The RayService as a YAML file, with a header saying what its image needs."""
    header = (
        f"# KubeRay RayService for the Bento {tag}, written by `bentoml-ray build --kuberay`.\n"
        "# Apply: kubectl apply -f <this file>\n"
        "# The image must have bentoml-ray installed (same Ray and Python as here), and the\n"
        "# Bento's requirements unless install_requirements is set; args.bento_uri in\n"
        "# serveConfigV2 must be reachable from the pods (s3://, gs://, https://).\n"
    )
    return header + dump_yaml(manifest)


def _configured_deployments(svc: Any, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``deployments:`` entries for the deployments the options configure explicitly."""
    legacy = isinstance(svc, LegacyService)
    entries: list[dict[str, Any]] = []

    def add(default_name: str, deployment_options: Any) -> None:
        deployment_options = dict(deployment_options or {})
        entry: dict[str, Any] = {"name": deployment_options.get("name") or default_name}
        entry.update(
            (key, deployment_options[key]) for key in SCALING_OPTIONS if key in deployment_options
        )
        entries.append(entry)

    if "service_deployment_config" in options:
        root = svc.name
        add(
            api_server_deployment_name(root) if legacy else service_deployment_name(root),
            options["service_deployment_config"],
        )
    runner_options = (
        options.get("runner_deployment_config")
        or options.get("runners_deployment_config_map")
        or {}
    )
    declared_embedded = {r.name for r in svc.runners if r.embedded} if legacy else set()
    for callee, callee_options in runner_options.items():
        embedded = dict(callee_options or {}).get("embedded")
        if check_embedded(embedded, callee in declared_embedded, f"runner {callee!r}"):
            continue  # runs inside the API server: no deployment of its own
        add(
            runner_deployment_name(svc.name, callee) if legacy else service_deployment_name(callee),
            callee_options,
        )
    return entries


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain YAML data (dicts, lists, scalars), or a message saying what is not."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise InvalidDeploymentConfig(
        f"{where} is a {type(value).__name__}, which a Serve config (YAML) cannot hold; "
        "give it in Python with bentoml_ray.deployment() instead."
    )
