"""Make ``bentoml.ray.deployment`` resolve to bentoml-ray's.

BentoML 1.4's own ``bentoml.ray`` fails at import on Ray >= 2.8. Code written for it keeps
working after one added ``import bentoml_ray``: the name ``bentoml.ray`` then refers to a
small module whose ``deployment`` is ours.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import bentoml


def install(deployment: Callable[..., Any]) -> None:
    module = types.ModuleType("bentoml.ray", "Ray Serve integration, provided by bentoml-ray.")
    vars(module).update(deployment=deployment, __all__=["deployment"])
    sys.modules["bentoml.ray"] = module
    bentoml.ray = module  # type: ignore[attr-defined]
