"""The exceptions bentoml-ray raises, and their spelling hints.

Nearly all are raised before anything is deployed; in a replica, only a call to a runner or
dependency that Ray cannot carry (``_replica.calls``) raises ``BentoRayError`` itself.

The two raised before deployment derive from the builtin a caller would reach for
(``ValueError``, ``LookupError``), so code written against the original ``bentoml.ray``
that caught those keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BentoRayError(Exception):
    """Base class of bentoml-ray's own errors."""


class InvalidDeploymentConfig(BentoRayError, ValueError):
    """An argument of ``deployment()`` names something that does not exist or is out of range.

    The message names the culprit and what is allowed instead.
    """


class BentoNotFound(BentoRayError, LookupError):
    """The Bento tag is not in the BentoML store this process reads."""


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """A short hint naming the closest allowed spelling, or nothing."""
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
