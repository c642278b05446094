"""A KubeRay ``RayService`` that runs a Serve config: ``bentoml-ray build --kuberay``."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

import ray

from .yaml_text import dump_yaml

#: KubeRay appends 6 characters to a RayService's name for its RayCluster, whose name
#: may have at most 53 (its longest service suffix is ``-serve-svc``).
_MAX_RAYSERVICE_NAME = 47


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
