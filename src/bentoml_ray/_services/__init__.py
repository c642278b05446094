"""BentoML 1.2+ Bentos: one deployment per service of the dependency graph, the root the ingress.

``layout`` and ``service_options`` run in the driver; the other modules run in the replicas.
"""
