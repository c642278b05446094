"""YAML for people to read and edit: the Serve config and the KubeRay manifest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):  # type: ignore[misc]
    """YAML without anchors and aliases: a value given twice is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: Any, data: str) -> Any:
    """Multi-line strings (``serveConfigV2``) as literal blocks, readable as they are."""
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_PlainDumper.add_representer(str, _represent_str)


def dump_yaml(data: Mapping[str, Any]) -> str:
    """``data`` as block-style YAML in its own key order, for people to read and edit."""
    return str(yaml.dump(dict(data), Dumper=_PlainDumper, sort_keys=False))
