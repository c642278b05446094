"""Helpers shared by the tests: building Bentos, deploying applications, free ports."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"
BIN = pathlib.Path(sys.executable).parent

warnings.filterwarnings("ignore", category=DeprecationWarning)

#: In the environment of the ``four_bentos`` fixture's ingress replicas, and nowhere else:
#: if it shows up in an answer or a log, it leaked.
SECRET = "s3cr3t-" + secrets.token_hex(12)

#: The request body limit of ``four_bentos``' two fixtures: small enough that the
#: chunked-body tests send little.
SMALL_BODY_LIMIT = 64 * 1024


def own_ray_env() -> dict[str, str]:
    """This process's environment without a Ray address or token: a process started with
    it starts a Ray of its own (or joins only the cluster it is then told about)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process was given before: the
    kernel hands a just-released port out again, and a cluster once got its GCS and its
    HTTP proxy on the same number."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def bentoml_config_restored() -> Iterator[None]:
    """BentoML's process-wide configuration, put back as it was when the block (a module
    fixture) ends: loading a 1.2+ service (``inject_config``) swaps it for the 1.2+ form,
    and the runner-based Bentos later tests load in this process need the other."""
    import copy

    from bentoml._internal.configuration.containers import BentoMLContainer

    saved = copy.deepcopy(BentoMLContainer.config.get())
    yield
    BentoMLContainer.config.set(saved)


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


#: The checks of the source that run with the tests (README's one test command runs them).
SOURCE_CHECK_COMMANDS = {
    "ruff lint": ["ruff", "check", "."],
    "ruff format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],
}


#: The running checks, once started (conftest starts them with the session).
SOURCE_CHECKS: dict[str, subprocess.Popen[str]] = {}


def start_source_checks() -> dict[str, subprocess.Popen[str]]:
    """Start ruff and mypy on the repository, each in a process of its own (once)."""
    for name, command in SOURCE_CHECK_COMMANDS.items():
        if name not in SOURCE_CHECKS:
            SOURCE_CHECKS[name] = subprocess.Popen(
                [sys.executable, "-m", *command], cwd=ROOT, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
    return SOURCE_CHECKS


def train_iris() -> None:
    subprocess.run(
        [sys.executable, "train.py"], cwd=EXAMPLES / "iris_classifier", check=True, timeout=300
    )


def build_bento(build_ctx: pathlib.Path) -> str:
    """``bentoml build`` in its own process, as a user would, and return the new tag.

    In-process builds would share Python's module cache: two Bentos whose services both
    live in ``service.py`` would get the first one's service.
    """
    tries = 3
    for attempt in range(1, tries + 1):
        done = subprocess.run(
            [str(BIN / "bentoml"), "build", "--output", "tag"],
            cwd=build_ctx,
            capture_output=True,
            text=True,
            timeout=300,
        )
        # Locking a Bento's packages asks PyPI (uv pip compile), the build's only network
        # step; a CI run once lost every iris test to one failed lock. Retry only that.
        lock_failed = done.returncode != 0 and "Failed to lock PyPI packages" in done.stderr
        if not lock_failed or attempt == tries:
            break
        time.sleep(5 * attempt)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def run_all(apps: dict[str, tuple[Any, str]]) -> None:
    """Deploy the applications ``{name: (app, route_prefix)}`` at once and wait until all
    run: their replicas start side by side, not one application after another.

    ``serve.run_many`` where Ray has it (a developer API of recent Rays), else in turn.
    """
    from ray import serve

    run_many = getattr(serve, "run_many", None)
    if run_many is None or not hasattr(serve, "RunTarget"):
        for name, (app, route_prefix) in apps.items():
            serve.run(app, name=name, route_prefix=route_prefix)
        return
    run_many(
        [
            serve.RunTarget(app, name=name, route_prefix=prefix)
            for name, (app, prefix) in apps.items()
        ]
    )


@contextlib.contextmanager
def deployed(app: Any, name: str, route_prefix: str = "/") -> Iterator[None]:
    """``serve.run`` an application for the length of a ``with`` block; it is deleted in
    the background after (``delete_in_background``)."""
    from ray import serve

    wait_for_deletions(route_prefix)  # Serve refuses a prefix that an application holds
    serve.run(app, name=name, route_prefix=route_prefix)
    try:
        yield
    finally:
        delete_in_background(name, route_prefix)


#: Deletions left to finish in the background: the route prefix each frees (None: none
#: that a test of the session's Ray takes), and how to wait for it (a timeout in seconds).
_DELETIONS: list[tuple[str | None, Callable[[float], None]]] = []


def delete_in_background(name: str, route_prefix: str | None) -> None:
    """``serve.delete`` an application of the session's Ray without waiting for it.

    Its replicas' graceful stop (2 s at the least) then overlaps the next test. Whoever
    needs it gone waits for it: ``deployed`` for the route prefix it takes, ``serve_url``
    for all of them before Ray stops.
    """
    from ray import serve

    thread = threading.Thread(target=serve.delete, args=(name,), name=f"delete {name}")
    thread.daemon = True
    thread.start()
    _DELETIONS.append((route_prefix, thread.join))


def wait_for_deletions(route_prefix: str | None = None, timeout_s: float = 120) -> None:
    """Wait for the background deletions (bounded): all, or those of ``route_prefix``."""
    for entry in list(_DELETIONS):
        if route_prefix is None or entry[0] == route_prefix:
            entry[1](timeout_s)
            _DELETIONS.remove(entry)


@contextlib.contextmanager
def ray_start_head(
    env: dict[str, str], temp_dir: str, num_cpus: int, *extra_args: str
) -> Iterator[int]:
    """A ``ray start --head --block`` node on loopback for a ``with`` block; yields its GCS port.

    Its own process group and ``temp_dir`` (keep it short: Ray's socket paths are limited);
    its output goes to ``temp_dir/ray-start.log``. No dashboard unless ``extra_args`` ask.
    """
    gcs_port = free_port()
    args = [f"--port={gcs_port}", f"--temp-dir={temp_dir}", *extra_args]
    if not any(arg.startswith("--include-dashboard") for arg in extra_args):
        args.append("--include-dashboard=false")
    with _ray_start(env, os.path.join(temp_dir, "ray-start.log"), num_cpus, "--head", *args):
        yield gcs_port


@contextlib.contextmanager
def ray_start_worker(
    env: dict[str, str], gcs_port: int, log_path: str, num_cpus: int, *extra_args: str
) -> Iterator[None]:
    """A second ``ray start --block`` node joining the head at ``gcs_port``, on loopback.

    Its agents get free ports of their own: Ray's defaults are fixed numbers that the head
    on the same machine already holds.
    """
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "metrics-export-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "runtime-env-agent-port", "node-manager-port", "object-manager-port",
        )
    ]  # fmt: skip
    args = [f"--address=127.0.0.1:{gcs_port}", *ports, *extra_args]
    if "raylet_socket_name" in _ray_start_options():
        # Ray 2.47 puts every node of a machine in the head's temp folder, where two raylets
        # would bind the same socket, so it takes socket names per node (later Rays do not).
        folder = os.path.dirname(log_path)
        args += [f"--raylet-socket-name={folder}/far-raylet"]
        args += [f"--plasma-store-socket-name={folder}/far-plasma"]
    with _ray_start(env, log_path, num_cpus, *args):
        yield


def _ray_start_options() -> set[str]:
    """The options the installed Ray's ``ray start`` takes (its click command's)."""
    from ray.scripts.scripts import start

    return {param.name for param in start.params if param.name}


@contextlib.contextmanager
def _ray_start(env: dict[str, str], log_path: str, num_cpus: int, *args: str) -> Iterator[None]:
    command = [
        str(BIN / "ray"), "start", "--block", f"--num-cpus={num_cpus}",
        "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args,
    ]  # fmt: skip
    tries = 2
    for attempt in range(1, tries + 1):
        with open(log_path, "a") as log:  # both tries' output, if there are two
            node = subprocess.Popen(
                command,
                # Unbuffered: ``_wait_for_start`` reads what it has printed so far.
                env={**env, "PYTHONUNBUFFERED": "1"},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            _wait_for_start(node, log_path)
            break
        except _NodeExited:
            # A busy machine once failed Ray 2.47's head at its dashboard's startup
            # deadline; start it once more before the tests that need it fail.
            stop_process_group(node, timeout=45)
            if attempt == tries:
                raise
    try:
        yield
    finally:
        stop_process_group(node, timeout=45)


class _NodeExited(AssertionError):
    """``ray start`` gave up before its node ran."""


def _wait_for_start(node: subprocess.Popen[Any], log_path: str, deadline: float = 120) -> None:
    """Wait until ``ray start`` says its node runs, so that nodes start one after another.

    Ray 2.47 lets a second node's raylet start before the head's, in the head's folder,
    and the head's raylet then failed to start.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with open(log_path) as log:
            if "Ray runtime started." in log.read():
                return
        if node.poll() is not None:
            raise _NodeExited(f"ray start exited with {node.returncode}; see {log_path}")
        time.sleep(0.5)
    raise AssertionError(f"ray start did not start its node in {deadline:.0f} s; see {log_path}")


@dataclass(frozen=True)
class RayCluster:
    """What tests need to reach the session's ``ray start`` cluster (see conftest)."""

    #: The head's GCS address, for ``ray.init`` and ``RAY_ADDRESS``.
    address: str
    #: The dashboard, for ``serve deploy --address``.
    dashboard_url: str
    #: Where Serve's proxy answers.
    serve_url: str
    #: The environment for client processes: RAY_ADDRESS, token auth, the test store.
    env: dict[str, str]
    #: A custom resource only the second node has: ask for it to run there.
    far_resource: str
    #: A custom resource only the head has: ask for it to stay off the far node.
    head_resource: str
    #: The second node's (empty) BentoML store and its bentoml-ray cache.
    far_home: str
    far_cache_dir: str
    #: Ray's temp folder, logs included, of both nodes.
    temp_dir: str
    #: Whether the nodes check clients' tokens (Ray 2.52 and later).
    token_auth: bool


def cached_bentos(cache: str | pathlib.Path) -> set[str]:
    """The Bentos (``name:version``) in a node's bentoml-ray cache, however they came."""
    bentos = pathlib.Path(cache) / "bentos"
    return {
        f"{name.name}:{version.name}"
        for name in (bentos.iterdir() if bentos.is_dir() else ())
        for version in name.iterdir()
        if (version / "bento.yaml").is_file()
    }


def ray_has_token_auth() -> bool:
    """Whether the installed Ray has token authentication (its CLI has ``get-auth-token``)."""
    from ray.scripts.scripts import cli

    return "get-auth-token" in cli.commands


def run_until_ok(command: list[str], env: dict[str, str], deadline: float) -> None:
    """Run ``command`` until it succeeds; a node may still be starting."""
    end = time.monotonic() + deadline
    while True:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{command} kept failing:\n{done.stdout}\n{done.stderr}")
        time.sleep(2)


def stop_process_group(process: subprocess.Popen[Any], timeout: float) -> None:
    """Stop a process group a test started (``start_new_session=True``), leader first.

    The leader gets SIGINT, as from Ctrl-C: ``ray start --block`` then stops its node in
    about 2 s, Serve included, where a SIGTERM (to it or to its whole group) took about
    30 s. What is left of the group afterwards gets SIGTERM, then SIGKILL.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    deadline = time.monotonic() + 10
    for sig in (signal.SIGTERM, signal.SIGKILL):
        while _group_alive(process.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            time.sleep(0.5)
            process.poll()  # reap the leader, or the group never looks empty
        deadline = time.monotonic() + 10
    process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def picked_route(routes: list[Any], method: str, path: str) -> str | None:
    """The route Starlette's router takes: the first full match, else the first partial."""
    from starlette.routing import Match

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.name)
        if match is Match.PARTIAL and partial is None:
            partial = str(route.name)
    return partial


@contextlib.contextmanager
def bentoml_serve(tag: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``bentoml serve`` of ``tag`` on a free loopback port for a ``with`` block.

    Yields its URL at once, so that the caller can deploy the same Bento on Ray meanwhile;
    ``wait_until_ready`` waits for it.
    """
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process, timeout=30)


def wait_until_ready(url: str, deadline_s: float = 120) -> None:
    """Wait until ``url``'s ``/readyz`` answers 200 (``bentoml serve`` takes a while)."""
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not become ready in {deadline_s:.0f} s")


def run_driver(script: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run a driver ``script`` in a process of its own with ``spec`` as its argument; the
    report (JSON) it prints last."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(spec)],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(report)  # its figures, for the record
    return report


def delete_apps(cluster: RayCluster, *names: str) -> None:
    """Start to ``serve.delete`` the applications ``names`` on the ``ray start`` cluster,
    in a process of its own, not waited for (``delete_in_background``); ``ray_cluster``
    waits for it before it stops the cluster."""
    script = "import ray, sys\nfrom ray import serve\nray.init(log_to_driver=False)\n"
    script += "for name in sys.argv[1:]: serve.delete(name)"
    process = subprocess.Popen([sys.executable, "-c", script, *names], env=cluster.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _DELETIONS.append((None, functools.partial(_end, process)))


def _end(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
