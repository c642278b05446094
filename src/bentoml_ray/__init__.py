"""Run any BentoML Bento on Ray Serve.

    import bentoml_ray

    app = bentoml_ray.deployment("iris_classifier:latest")   # then `serve run module:app`

Importing this package also makes ``bentoml.ray.deployment`` resolve to
``bentoml_ray.deployment``, so code written for BentoML's original integration runs as is.
"""

from __future__ import annotations

from . import _bentoml_ray_alias
from ._application import deployment
from ._deploy.serve_config import application_builder
from ._errors import BentoNotFound, BentoRayError, InvalidDeploymentConfig
from ._hub.deployment import hub_deployment_name
from ._runners.layout import api_server_deployment_name, runner_deployment_name
from ._services.layout import service_deployment_name

__version__ = "0.1.0"

_bentoml_ray_alias.install(deployment)

__all__ = [
    "BentoNotFound",
    "BentoRayError",
    "InvalidDeploymentConfig",
    "api_server_deployment_name",
    "application_builder",
    "deployment",
    "hub_deployment_name",
    "runner_deployment_name",
    "service_deployment_name",
]
