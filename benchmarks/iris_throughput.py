"""Requests/s of the iris example: `bentoml serve` next to bentoml-ray, in one run.

    python benchmarks/iris_throughput.py [--duration 10] [--rounds 3] [--connections 32]

Both servers run side by side on loopback; wrk (Debian's `wrk`) loads one at a time,
alternating A B A B, and the medians are reported, because this machine is shared and
noisy: only ratios from the same run mean anything. Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
IRIS = ROOT / "examples" / "iris_classifier"
RESULTS = ROOT / "benchmarks" / "results"
BODY = "[[5.9, 3.0, 5.1, 1.8]]"

RAY_SERVER = """
import signal, sys, time, warnings
warnings.simplefilter("ignore")
import ray, bentoml_ray
from ray import serve
ray.init(address="local", num_cpus=int(sys.argv[2]), include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(bentoml_ray.deployment("iris_classifier:latest"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    while True:
        time.sleep(1)
finally:
    serve.shutdown()
    ray.shutdown()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            request = urllib.request.Request(
                f"{url}/classify", BODY.encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def run_wrk(url: str, connections: int, duration: int, script: pathlib.Path) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         f"{url}/classify"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
        return float(match.group(1)) * scale

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return {"rps": rps, "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs for Ray")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="bentoml-ray-bench-")
    env = {**os.environ, "BENTOML_HOME": home, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    build = (
        "import bentoml, train; train.train(); "
        f"bentoml.bentos.build_bentofile(build_ctx={str(IRIS)!r})"
    )
    subprocess.run([sys.executable, "-c", build], cwd=IRIS, env=env, check=True)

    script = pathlib.Path(home) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(BODY)}\n"
    )
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    bentoml_port, ray_port = free_port(), free_port()

    def start(command: list[str]) -> subprocess.Popen[bytes]:
        quiet = subprocess.DEVNULL
        return subprocess.Popen(
            command, env=env, stdout=quiet, stderr=quiet, start_new_session=True
        )

    bentoml_bin = str(pathlib.Path(sys.executable).parent / "bentoml")
    servers["bentoml serve"] = (
        start([bentoml_bin, "serve", "iris_classifier:latest", "--host", "127.0.0.1",
               "--port", str(bentoml_port)]),
        f"http://127.0.0.1:{bentoml_port}",
    )  # fmt: skip
    servers["bentoml-ray"] = (
        start([sys.executable, "-c", RAY_SERVER, str(ray_port), str(args.ray_cpus)]),
        f"http://127.0.0.1:{ray_port}",
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    try:
        for name, (_, url) in servers.items():
            print(f"{name}: first 200 after {wait_ready(url):.1f} s", flush=True)
            run_wrk(url, args.connections, 2, script)  # warm-up
        for round_ in range(args.rounds):
            for name, (_, url) in servers.items():
                result = run_wrk(url, args.connections, args.duration, script)
                runs[name].append(result)
                print(f"round {round_ + 1} {name}: {result}", flush=True)
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process, _ in servers.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    summary = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    ratio = summary["bentoml-ray"]["rps"] / summary["bentoml serve"]["rps"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"iris-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "runs": runs, "median": summary}, indent=2)
    )
    print(f"\nc={args.connections}, {args.rounds} rounds of {args.duration} s, medians:")
    print("| server | requests/s | p50 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- |")
    for name, row in summary.items():
        print(
            f"| {name} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['errors']:.0f} |"
        )
    print(f"bentoml-ray / bentoml serve: {ratio:.2f}")


if __name__ == "__main__":
    main()
