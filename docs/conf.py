"""Sphinx configuration of the bentoml-ray documentation.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (the ``docs``
extra installs what it needs). Pages are MyST markdown; the API reference comes from the
docstrings (Google style, read by napoleon) and the CLI page from the Click commands.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

project = "bentoml-ray"
author = "The bentoml-ray authors"
copyright = "2026, The bentoml-ray authors"
release = importlib.metadata.version("bentoml-ray")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Headings down to ### get anchors, so pages can link to sections of each other.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"bentoml-ray {release}"


def _load_public_names() -> None:
    """Import every name of ``bentoml_ray.__all__``: the package imports them when first
    used, and autodoc lists only what a module already holds."""
    import bentoml_ray

    for name in bentoml_ray.__all__:
        getattr(bentoml_ray, name)


_load_public_names()

#: Docstrings of module-level values, as written: napoleon would read their first line as
#: "type: description" and turn the words before a colon into a type.
_VALUE_DOCSTRINGS: dict[str, list[str]] = {}


def _keep_value_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in {"data", "attribute"}:
        _VALUE_DOCSTRINGS[name] = list(lines)


def _restore_value_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what == "module":
        # A module's docstring is written for readers of the source (where its code runs,
        # why it imports lazily); each page says above the listing what a user needs.
        lines[:] = []
    elif name in _VALUE_DOCSTRINGS:
        lines[:] = _VALUE_DOCSTRINGS.pop(name)


def setup(app: Any) -> None:
    # napoleon handles autodoc-process-docstring at the default priority, 500.
    app.connect("autodoc-process-docstring", _keep_value_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_value_docstring, priority=600)
