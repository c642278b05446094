"""README's quickstart, run as README says: a CI step of its own (``.ci/run``), outside
the suite, since a newcomer runs it first anyway (``pytest tests/quickstart``).

The quickstart is one process that builds the review scorer Bento into an empty
BentoML store, serves it on a Ray of its own, answers a request and stops; what a newcomer
sees on the way has no warning, no traceback and nothing that reads as a failure. (The
offline example's function runs in ``test_offline``.)
"""

from __future__ import annotations

import pathlib
import re
import socket
import subprocess
import sys

import pytest
from _support import EXAMPLES, ROOT, own_ray_env

#: Words that would make a newcomer think something went wrong (Ray's exit noise was
#: "Task ServeController.graceful_shutdown failed ... killed by `ray.kill`").
ALARMING = re.compile(r"warning|traceback|error|fail|exception|killed", re.IGNORECASE)

SCORER = EXAMPLES / "review_scorer"


@pytest.mark.ray  # a process of its own starts Ray
def test_readme_quickstart_is_quiet_and_answers(tmp_path: pathlib.Path) -> None:
    command = ".venv/bin/python examples/review_scorer/quickstart.py"
    assert command in (ROOT / "README.md").read_text(), "README no longer runs this script"
    with socket.socket() as sock:  # the port README's curl and the script use
        if sock.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.fail("Something already listens on 127.0.0.1:8000; the quickstart needs it")
    env = {**own_ray_env(), "BENTOML_HOME": str(tmp_path / "bentoml")}  # a fresh store
    env.pop("PYTHONWARNINGS", None)  # as a newcomer's shell has it
    done = subprocess.run(
        [sys.executable, str(SCORER / "quickstart.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"^Built Bento review_scorer:\w+$", done.stdout, re.MULTILINE), output
    assert "POST /score" in done.stdout and "-> 200 [4.0, -2.5]" in done.stdout, output
    assert done.stdout.rstrip().endswith("Stopped Ray."), output
    assert not ALARMING.search(output), output
