"""ruff and mypy run with the tests, so the README's one test command checks them too.

They start with the session, in processes of their own (conftest), and these tests, which
run last, wait for their verdicts: mypy's 15 s then overlap the rest of the suite.
"""

from __future__ import annotations

import subprocess

import pytest
from _support import start_source_checks


@pytest.fixture(scope="module")
def checks() -> dict[str, subprocess.Popen[str]]:
    return start_source_checks()  # the ones running since the session started


@pytest.mark.parametrize("name", ["ruff lint", "ruff format", "mypy"])
def test_source_check_passes(checks: dict[str, subprocess.Popen[str]], name: str) -> None:
    output, _ = checks[name].communicate(timeout=300)
    assert checks[name].returncode == 0, output[-5000:]
