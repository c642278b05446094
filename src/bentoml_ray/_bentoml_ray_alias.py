"""Make ``bentoml.ray.deployment`` resolve to bentoml-ray's.

BentoML 1.4's own ``bentoml.ray`` fails at import on Ray >= 2.8. Code written for it keeps
working after one added ``import bentoml_ray``: the name ``bentoml.ray`` then refers to a
small module whose ``deployment`` is ours (looked up when first used, as the package's
public names are).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import bentoml


def install(deployment: Callable[[], Callable[..., Any]]) -> None:
    """Point ``bentoml.ray`` at a module whose ``deployment`` is what ``deployment()`` gives."""
    module = types.ModuleType("bentoml.ray", "Ray Serve integration, provided by bentoml-ray.")

    def __getattr__(name: str) -> Any:
        if name != "deployment":
            raise AttributeError(f"module 'bentoml.ray' has no attribute {name!r}")
        return deployment()

    vars(module).update(__getattr__=__getattr__, __all__=["deployment"])
    sys.modules["bentoml.ray"] = module
    bentoml.ray = module  # type: ignore[attr-defined]
