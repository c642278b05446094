"""Helpers shared by the tests: building Bentos, deploying applications, free ports."""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
import socket
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"

warnings.filterwarnings("ignore", category=DeprecationWarning)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_module(path: pathlib.Path, name: str | None = None) -> ModuleType:
    """Import a file as a module, with its folder importable (as ``serve run`` does)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name or path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def train_iris() -> None:
    load_module(EXAMPLES / "iris_classifier" / "train.py", "iris_train").train()


def build_bento(build_ctx: pathlib.Path) -> str:
    import bentoml

    return str(bentoml.bentos.build_bentofile(build_ctx=str(build_ctx)).tag)


@contextlib.contextmanager
def deployed(app: Any, name: str, route_prefix: str = "/") -> Iterator[None]:
    """``serve.run`` an application for the length of a ``with`` block."""
    from ray import serve

    serve.run(app, name=name, route_prefix=route_prefix)
    try:
        yield
    finally:
        serve.delete(name)
