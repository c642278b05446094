# The API contract's example 3: Ray Serve batching for the runner's batchable `predict`.
#   serve run bento_ray_batched:deploy
import bentoml_ray

deploy = bentoml_ray.deployment(
    "iris_classifier:latest",
    enable_batching=True,
    batching_config={
        "iris_clf": {
            "predict": {
                "max_batch_size": 1024,
                "batch_wait_timeout_s": 0.2,
            },
        },
    },
)
