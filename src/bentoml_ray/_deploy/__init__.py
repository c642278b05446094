"""Deploying from files and the command line: the options file, the Serve config and its
application builder, the KubeRay manifest, and the ``bentoml-ray`` CLI. Driver side only."""
