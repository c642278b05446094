"""Runner-based ("legacy") Bentos: one API-server deployment, one deployment per runner.

``layout`` runs in the driver; the other modules run in the replicas.
"""
