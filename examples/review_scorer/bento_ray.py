"""Serve the composed Bento: ``serve run bento_ray:scorer``.

Two deployments come out: ``ReviewScorer`` (HTTP) and ``Preprocessor`` (reached over a
Ray handle), each configured from its ``@bentoml.service`` settings.
"""

import bentoml_ray

scorer = bentoml_ray.deployment("review_scorer:latest")
