"""Session fixtures: a private BentoML store with the example Bentos, and one local Ray.

BENTOML_HOME is set before anything imports BentoML, so the developer's own store is never
read or written. One Ray instance (``address="local"``, so a stale ``ray start`` cluster is
never picked up) serves every test that needs Ray; each module deploys its applications
under its own name and deletes them when done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

_STORE = tempfile.mkdtemp(prefix="bentoml-ray-tests-")
os.environ["BENTOML_HOME"] = _STORE
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# BentoML installs its own warning filter at import; importing it here, before pytest's
# per-test filters apply, lets pyproject's filterwarnings quiet its deprecation notes.
import bentoml.io  # noqa: E402, F401
import pytest  # noqa: E402
from _support import EXAMPLES, FIXTURES, build_bento, free_port, train_iris  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_STORE, ignore_errors=True)


@pytest.fixture(scope="session")
def bentoml_home() -> str:
    return _STORE


@pytest.fixture(scope="session")
def iris_bento() -> str:
    """The example iris Bento, built from examples/iris_classifier; returns its tag."""
    train_iris()
    return build_bento(EXAMPLES / "iris_classifier")


@pytest.fixture(scope="session")
def probe_bento() -> str:
    """The batch-probe Bento from tests/fixtures/batch_probe; returns its tag."""
    return build_bento(FIXTURES / "batch_probe")


@pytest.fixture(scope="session")
def review_scorer_bento() -> str:
    """The composed 1.2+ example from examples/review_scorer; returns its tag."""
    return build_bento(EXAMPLES / "review_scorer")


@pytest.fixture(scope="session")
def graph_bento() -> str:
    """The 1.2+ diamond graph from tests/fixtures/service_graph; returns its tag."""
    return build_bento(FIXTURES / "service_graph")


@pytest.fixture(scope="session")
def slow_service_bento() -> str:
    """tests/fixtures/slow_service: a 1.2+ service that can hang past its 2 s timeout."""
    return build_bento(FIXTURES / "slow_service")


@pytest.fixture(scope="session")
def slow_runner_bento() -> str:
    """tests/fixtures/slow_runner: a runner Bento whose model can hang."""
    return build_bento(FIXTURES / "slow_runner")


@pytest.fixture(scope="session")
def fault_runner_bento() -> str:
    """tests/fixtures/fault_runner: a runner Bento with a slow runner, to kill under load."""
    return build_bento(FIXTURES / "fault_runner")


@pytest.fixture(scope="session")
def fault_probe_bento() -> str:
    """tests/fixtures/fault_probe: a composed 1.2+ Bento with a slow dependency, to kill."""
    return build_bento(FIXTURES / "fault_probe")


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    """Start one local Ray with Serve on a free loopback port; yield the base URL."""
    import ray
    from ray import serve

    # Logical CPUs beyond the real two, so that several replicas can be scheduled.
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
