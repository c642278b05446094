"""Serve the tenants example: ``serve run bento_ray:tenants``.

``Tenants`` runs two replicas, so Ray's routing by model id has a choice to make.
"""

import bentoml_ray

tenants = bentoml_ray.deployment(
    "tenants:latest",
    runner_deployment_config={"Tenants": {"num_replicas": 2}},
)
