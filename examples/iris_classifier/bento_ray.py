# The API contract's example 1: a Bento tag is enough.
#   serve run bento_ray:classifier
import bentoml_ray

classifier = bentoml_ray.deployment("iris_classifier:latest")
