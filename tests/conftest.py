"""Session fixtures: a private BentoML store with the example Bentos, one local Ray and
one two-node ``ray start`` cluster; and what runs beside the tests from the start (the
Bento builds, ruff and mypy).

BENTOML_HOME is set before anything imports BentoML, so the developer's own store is never
read or written. One Ray instance (``address="local"``, so a stale ``ray start`` cluster is
never picked up) serves every test that needs Ray; each module deploys its applications
under its own name and deletes them when done.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_STORE = tempfile.mkdtemp(prefix="bentoml-ray-tests-")
os.environ["BENTOML_HOME"] = _STORE
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Started in the background (``cmd &``, as CI may), a process ignores SIGINT, and the
# processes the tests start inherit that: ``ray start --block`` nodes and the CLI then
# shrugged off the SIGINT that stops them in 2 s, and each waited out its 45 s grace.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# BentoML installs its own warning filter at import; importing it here, before pytest's
# per-test filters apply, lets pyproject's filterwarnings quiet its deprecation notes.
import bentoml.io  # noqa: E402, F401
import pytest  # noqa: E402
from _support import (  # noqa: E402
    BIN,
    EXAMPLES,
    FIXTURES,
    SECRET,
    SMALL_BODY_LIMIT,
    SOURCE_CHECKS,
    RayCluster,
    build_bento,
    cached_bentos,
    free_port,
    own_ray_env,
    ray_has_token_auth,
    ray_start_head,
    ray_start_worker,
    run_all,
    run_until_ok,
    start_source_checks,
    train_iris,
    wait_for_deletions,
)

#: The fixtures that start Ray: a test that uses one (directly or through another fixture)
#: is marked ``ray``, so ``-m "not ray"`` runs only what needs no Ray.
RAY_FIXTURES = frozenset({"serve_url", "ray_cluster"})


#: Tests that need no Ray: a test here that would start it is refused at collection.
UNIT_TESTS = pathlib.Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray") and UNIT_TESTS in item.path.parents:
            raise pytest.UsageError(f"{item.nodeid} starts Ray: it belongs in tests/integration/")
    # ruff and mypy run in processes of their own from the start of the session (mypy takes
    # a core for about 15 s): their tests go last and collect what they found.
    checks = [item for item in items if item.path.name == "test_code_quality.py"]
    items[:] = [item for item in items if item not in checks] + checks


def pytest_collection_finish(session: pytest.Session) -> None:
    """What runs beside the tests from the start: the Bento builds, ruff and mypy."""
    if session.config.option.collectonly or session.testsfailed:  # collection errors
        return
    start_bento_builds(session.items)
    if any(item.path.name == "test_code_quality.py" for item in session.items):
        start_source_checks()


#: Seconds spent per folder of tests/ (setup, call and teardown), for the closing summary.
_SPENT: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    folder = report.nodeid.split("/")[1] if report.nodeid.startswith("tests/") else "other"
    _SPENT[folder] = _SPENT.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per folder (unit, integration, benchmarks): what each costs the suite."""
    if _SPENT:
        spent = ", ".join(f"tests/{name} {s:.0f} s" for name, s in sorted(_SPENT.items()))
        terminalreporter.write_line(f"== time in tests: {spent}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _BUILD_POOL.shutdown(wait=True, cancel_futures=True)  # a build still running: -x, ^C
    for check in SOURCE_CHECKS.values():  # not collected: the session stopped early
        if check.poll() is None:
            check.kill()
            check.communicate()
    for path in (_STORE, _SOURCE_COPIES):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def bentoml_home() -> str:
    return _STORE


#: Where each session Bento is built from, by fixture name.
BENTO_SOURCES = {
    "iris_bento": EXAMPLES / "iris_classifier",
    "probe_bento": FIXTURES / "batch_probe",
    "review_scorer_bento": EXAMPLES / "review_scorer",
    "tenants_bento": EXAMPLES / "tenants",
    "graph_bento": FIXTURES / "service_graph",
    "slow_service_bento": FIXTURES / "slow_service",
    "slow_runner_bento": FIXTURES / "slow_runner",
    "fault_runner_bento": FIXTURES / "fault_runner",
    "fault_probe_bento": FIXTURES / "fault_probe",
    "counted_bento": FIXTURES / "counted_service",
    # Second versions, for the tests that deploy a newer version of a running Bento.
    "counted_v2_bento": FIXTURES / "counted_service",
    "versioned_bento": FIXTURES / "versioned_pair",
    "versioned_v2_bento": FIXTURES / "versioned_pair",
    "versioned_broken_bento": FIXTURES / "versioned_pair",
    "versioned_runner_bento": FIXTURES / "versioned_runner",
    "versioned_runner_v2_bento": FIXTURES / "versioned_runner",
}
#: Lines changed in a copy of the source before it is built: (old, new).
SOURCE_EDITS = {
    "counted_v2_bento": ('VERSION = "1"', 'VERSION = "2"'),
    "versioned_v2_bento": ('VERSION = "1"', 'VERSION = "2"'),
    "versioned_broken_bento": ('VERSION = "1"', 'VERSION = "broken"'),
    "versioned_runner_v2_bento": ('VERSION = "1"', 'VERSION = "2"'),
}


#: The session's Bento builds, by fixture name (``start_bento_builds``).
BENTO_BUILDS: dict[str, Future[str]] = {}
_BUILD_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bento-build")
_SOURCE_COPIES = pathlib.Path(tempfile.mkdtemp(prefix="bento-sources-"))


def start_bento_builds(items: list[pytest.Item]) -> None:
    """Build the Bentos the session's tests use, two at a time (a ``bentoml build`` per
    core), from the start of the session: one after another, when first wanted, they
    held up the tests that wanted them."""
    # In the order the tests first want them; a second version after its first.
    wanted = dict.fromkeys(
        name
        for item in items
        for name in sorted(getattr(item, "fixturenames", ()), key=lambda n: "_v2_" in n)
        if name in BENTO_SOURCES
    )
    for name in wanted:
        BENTO_BUILDS[name] = _BUILD_POOL.submit(_build, name)


def _build(name: str) -> str:
    source = BENTO_SOURCES[name]
    if name == "iris_bento":
        train_iris()  # the model the iris Bento packs
    if name in SOURCE_EDITS:
        old, new = SOURCE_EDITS[name]
        source = pathlib.Path(shutil.copytree(source, _SOURCE_COPIES / name))
        service = source / "service.py"
        text = service.read_text()
        assert old in text, f"{service} no longer has {old!r}: the edit would build a copy"
        service.write_text(text.replace(old, new))
    return build_bento(source)


@pytest.fixture(scope="session")
def bento_builds() -> dict[str, Future[str]]:
    """The session's Bento builds (started with the session), by fixture name."""
    return BENTO_BUILDS


@pytest.fixture(scope="session")
def iris_bento(bento_builds: dict[str, Future[str]]) -> str:
    """The example iris Bento, built from examples/iris_classifier; returns its tag."""
    return bento_builds["iris_bento"].result()


@pytest.fixture(scope="session")
def probe_bento(bento_builds: dict[str, Future[str]]) -> str:
    """The batch-probe Bento from tests/fixtures/batch_probe; returns its tag."""
    return bento_builds["probe_bento"].result()


@pytest.fixture(scope="session")
def review_scorer_bento(bento_builds: dict[str, Future[str]]) -> str:
    """The composed 1.2+ example from examples/review_scorer; returns its tag."""
    return bento_builds["review_scorer_bento"].result()


@pytest.fixture(scope="session")
def tenants_bento(bento_builds: dict[str, Future[str]]) -> str:
    """The many-models example from examples/tenants; returns its tag."""
    return bento_builds["tenants_bento"].result()


@pytest.fixture(scope="session")
def graph_bento(bento_builds: dict[str, Future[str]]) -> str:
    """The 1.2+ diamond graph from tests/fixtures/service_graph; returns its tag."""
    return bento_builds["graph_bento"].result()


@pytest.fixture(scope="session")
def slow_service_bento(bento_builds: dict[str, Future[str]]) -> str:
    """tests/fixtures/slow_service: a 1.2+ service that can hang past its 2 s timeout."""
    return bento_builds["slow_service_bento"].result()


@pytest.fixture(scope="session")
def slow_runner_bento(bento_builds: dict[str, Future[str]]) -> str:
    """tests/fixtures/slow_runner: a runner Bento whose model can hang."""
    return bento_builds["slow_runner_bento"].result()


@pytest.fixture(scope="session")
def fault_runner_bento(bento_builds: dict[str, Future[str]]) -> str:
    """tests/fixtures/fault_runner: a runner Bento with a slow runner, to kill under load."""
    return bento_builds["fault_runner_bento"].result()


@pytest.fixture(scope="session")
def fault_probe_bento(bento_builds: dict[str, Future[str]]) -> str:
    """tests/fixtures/fault_probe: a composed 1.2+ Bento with a slow dependency, to kill."""
    return bento_builds["fault_probe_bento"].result()


@pytest.fixture(scope="session")
def counted_bento(bento_builds: dict[str, Future[str]]) -> str:
    """tests/fixtures/counted_service: a metric made at import, tasks, a version."""
    return bento_builds["counted_bento"].result()


@pytest.fixture(scope="session")
def versioned_bento(bento_builds: dict[str, Future[str]]) -> str:
    """Two services (``Front`` calls ``Back``) whose answers name both versions: "1"."""
    return bento_builds["versioned_bento"].result()


@pytest.fixture(scope="session")
def versioned_v2_bento(bento_builds: dict[str, Future[str]]) -> str:
    """``versioned_bento`` at version "2"."""
    return bento_builds["versioned_v2_bento"].result()


@pytest.fixture(scope="session")
def versioned_broken_bento(bento_builds: dict[str, Future[str]]) -> str:
    """``versioned_bento`` whose ``Back`` cannot load."""
    return bento_builds["versioned_broken_bento"].result()


@pytest.fixture(scope="session")
def versioned_runner_bento(bento_builds: dict[str, Future[str]]) -> str:
    """A runner-based service whose answers name its version and its runner's: "1"."""
    return bento_builds["versioned_runner_bento"].result()


@pytest.fixture(scope="session")
def versioned_runner_v2_bento(bento_builds: dict[str, Future[str]]) -> str:
    """``versioned_runner_bento`` at version "2"."""
    return bento_builds["versioned_runner_v2_bento"].result()


@pytest.fixture(scope="session")
def counted_v2_bento(bento_builds: dict[str, Future[str]]) -> str:
    """A second version of tests/fixtures/counted_service: it answers ``version`` "2"."""
    return bento_builds["counted_v2_bento"].result()


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    """Start one local Ray with Serve on a free loopback port; yield the base URL."""
    import ray
    from ray import serve

    # Logical CPUs beyond the real two, so that several replicas can be scheduled (the
    # seven of ``four_bentos`` and the six of ``test_multiplexing`` stay for the session).
    ray.init(address="local", num_cpus=24, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # Not ``serve.shutdown()`` first: it waits out every replica's graceful shutdown.
        # Ending Ray ends Serve's actors with it, and the next ``ray.init`` starts afresh.
        wait_for_deletions()  # none is left calling a Ray that stops
        ray.shutdown()


@pytest.fixture(scope="session")
def four_bentos(
    serve_url: str,
    iris_bento: str,
    review_scorer_bento: str,
    slow_service_bento: str,
    slow_runner_bento: str,
) -> Iterator[dict[str, str]]:
    """Both examples and both slow fixtures, side by side; the base URL of each.

    For ``test_bad_input`` and ``test_security``, deployed once (seven replicas) for both.
    The ingress replicas (API server, root service) have ``SECRET`` in their environment;
    the two slow fixtures run under a bentoml-ray ``route_prefix`` (``/p``), with a request
    body limit of ``SMALL_BODY_LIMIT``, and the runner-based one with an API-server
    timeout of 2 s.
    """

    import bentoml_ray

    def options(slow_fixture: bool = False, **env_vars: str) -> dict[str, Any]:
        env = {"SERVICE_API_KEY": SECRET, **env_vars}
        if slow_fixture:
            env["BENTOML_RAY_MAX_REQUEST_BODY_SIZE"] = str(SMALL_BODY_LIMIT)
        prefix = {"route_prefix": "/p"} if slow_fixture else {}
        return {**prefix, "ray_actor_options": {"runtime_env": {"env_vars": env}}}

    timeout = "api_server.traffic.timeout=2"
    apps = {
        "iris": bentoml_ray.deployment(iris_bento, options()),
        "review": bentoml_ray.deployment(review_scorer_bento, options()),
        "slow_service": bentoml_ray.deployment(slow_service_bento, options(True)),
        "slow_runner": bentoml_ray.deployment(
            slow_runner_bento, options(True, BENTOML_CONFIG_OPTIONS=timeout)
        ),
    }
    run_all({f"four_{name}": (app, f"/{name}") for name, app in apps.items()})
    # Not deleted one by one: each ``serve.delete`` waits out its replicas' graceful
    # shutdown (15-20 s in all); the session's ``ray.shutdown`` ends them with the rest.
    yield {name: f"{serve_url}/{name}" + ("/p" if name.startswith("slow") else "") for name in apps}


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest, bentoml_home: str) -> Iterator[RayCluster]:
    """A two-node ``ray start`` cluster on loopback, as separate processes, with Serve.

    The head (8 logical CPUs, the custom resource ``head``; a dashboard if a test needs
    ``serve deploy`` or the state API) sees the test store; the
    second node has an empty ``BENTOML_HOME``, a cache of its own and the custom resource
    ``far`` that only it has, so a deployment asking for ``far`` runs where the Bento is
    not. Token authentication is on where Ray has it (2.52+), as ``ray start`` sets it,
    with a token of the session's own. Serve's proxy runs on the head only: both nodes
    share one loopback.
    """
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths
    far_home, far_cache = (tempfile.mkdtemp(prefix=p) for p in ("far-home-", "far-cache-"))
    env = own_ray_env()
    env.update(
        BENTOML_HOME=bentoml_home,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        # As behind a load balancer that spreads clients over every node's proxy: the
        # head's proxy sends requests to replicas on both nodes, not its own first.
        RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING="0",
        # Each node's metrics agent exports every 2 s rather than 10: the test that reads
        # the replicas' metrics there waits less.
        RAY_metrics_report_interval_ms="2000",
        RAY_AUTH_TOKEN=secrets.token_hex(32),  # never the developer's ~/.ray/auth_token
    )
    dashboard_port, http_port = free_port(), free_port()
    # Only when a test of the session needs it (``serve deploy``): on a busy machine Ray
    # 2.47's head gave up on its dashboard's 20 s startup deadline.
    wanted = any(item.get_closest_marker("ray_dashboard") for item in request.session.items)
    dashboard = ("--include-dashboard=true", "--dashboard-host=127.0.0.1") if wanted else ()
    head = ('--resources={"head": 100}', f"--dashboard-port={dashboard_port}")
    with ray_start_head(env, temp_dir, 8, *dashboard, *head) as port:
        far_env = {**env, "BENTOML_HOME": far_home, "BENTOML_RAY_CACHE_DIR": far_cache}
        far_log = os.path.join(temp_dir, "ray-start-far.log")
        with ray_start_worker(far_env, port, far_log, 4, '--resources={"far": 100}'):
            client_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
            # Serve's default host: test_security checks it is loopback only.
            serve_start = [str(BIN / "serve"), "start", "--proxy-location", "HeadOnly"]
            serve_start += ["--http-port", str(http_port)]
            run_until_ok(serve_start, client_env, deadline=90)
            yield RayCluster(
                address=f"127.0.0.1:{port}",
                dashboard_url=f"http://127.0.0.1:{dashboard_port}",
                serve_url=f"http://127.0.0.1:{http_port}",
                env=client_env,
                far_resource="far",
                head_resource="head",
                far_home=far_home,
                far_cache_dir=far_cache,
                temp_dir=temp_dir,
                token_auth=ray_has_token_auth(),
            )
            wait_for_deletions()
    for path in (temp_dir, far_home, far_cache):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def empty_far_cache(ray_cluster: RayCluster) -> pathlib.Path:
    """The far node's bentoml-ray cache, emptied for a test that ships a Bento there.

    Every cluster test shares the far node, and a Bento an earlier test left in its cache
    is used as it is: a test that checks shipping starts from nothing and sees its copy
    arrive (``cached_bentos``), or it would pass with nothing shipped.
    """
    cache = pathlib.Path(ray_cluster.far_cache_dir)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    assert not cached_bentos(cache)
    return cache
