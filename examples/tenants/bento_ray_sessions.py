"""The tenants example with each session kept on one replica of ``Tenants``.

Ray's consistent-hash router (Ray 2.60) picks the replica from the request's session id
(the ``x-session-id`` header), which the root passes on with its call to ``Tenants``.
"""

import bentoml_ray

sessions = bentoml_ray.deployment(
    "tenants:latest",
    runner_deployment_config={
        "Tenants": {
            "num_replicas": 2,
            "request_router_config": {
                "request_router_class": (
                    "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter"
                ),
            },
        },
    },
)
