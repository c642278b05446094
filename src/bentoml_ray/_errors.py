"""The exceptions bentoml-ray raises before anything is deployed.

Both derive from the builtin a caller would reach for (``ValueError``, ``LookupError``), so
code written against the original ``bentoml.ray`` that caught those keeps working.
"""

from __future__ import annotations


class BentoRayError(Exception):
    """Base class of bentoml-ray's own errors."""


class InvalidDeploymentConfig(BentoRayError, ValueError):
    """An argument of ``deployment()`` names something that does not exist or is out of range.

    The message names the culprit and what is allowed instead.
    """


class BentoNotFound(BentoRayError, LookupError):
    """The Bento tag is not in the BentoML store this process reads."""
