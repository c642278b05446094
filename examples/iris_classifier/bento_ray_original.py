# Code written for BentoML's original integration, bentoml.ray.deployment: it runs as is
# once bentoml_ray is imported.
#   serve run bento_ray_original:classifier
import bentoml

import bentoml_ray  # noqa: F401  (makes bentoml.ray.deployment bentoml_ray.deployment)

classifier = bentoml.ray.deployment("iris_classifier:latest")
