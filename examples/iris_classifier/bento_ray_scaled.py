# The API contract's example 2: scaling resources. Needs 8 logical CPUs in the Ray cluster
# (3 API-server replicas x 1 + the runner's 5). The API answers at /classify/classify.
#   serve run bento_ray_scaled:classifier
import bentoml_ray

classifier = bentoml_ray.deployment(
    "iris_classifier:latest",
    {
        "route_prefix": "/classify",
        "num_replicas": 3,
        "ray_actor_options": {"num_cpus": 1},
    },
    {
        "iris_clf": {
            "num_replicas": 1,
            "ray_actor_options": {"num_cpus": 5},
        },
    },
)
