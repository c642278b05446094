"""Many models behind one API: model loads with and without routing by model id, and cost.

    python benchmarks/multiplex.py loads                  # both Ray modes, routing on and off
    python benchmarks/multiplex.py cost --base-python /path/to/other/venv/bin/python

``loads``: the tenants example (``examples/tenants``, four tenants, ``Tenants`` at two
replicas of two models each) gets 400 requests with random tenants from 6 clients, twice,
through its root; printed: wrong answers and ``Tenants``' model loads per 400 requests, in
Ray's default and high-throughput modes, routed by bentoml-ray's ``ModelAffinityRouter``,
by Ray's own router, and by Ray's with routing by model id off
(``RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S=0``). One Ray per line.

``cost``: requests that name no model. The composed review scorer's ``/score`` under wrk,
served by this checkout and by another bentoml-ray install (``--base-python``: a venv's
Python with, say, the release before multiplexing), alternating over ``--rounds``; printed:
requests/s per round, the median of the per-round ratios and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from run import run_wrk, wait_ok

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
PORT = 8000
TENANTS = [f"tenant-{number}" for number in range(4)]
ROWS = {"x": [[5.9, 3.0, 5.1, 1.8]]}
THROUGHPUT_MODE = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
ROUTING_OFF = {"RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S": "0"}

#: Run by a server's Python: serve one Bento until stdin closes.
SERVER = """
import json, sys, ray, bentoml_ray
from ray import serve
tag, port, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(bentoml_ray.deployment(tag, None, options or None), route_prefix="/")
print("READY", flush=True)
sys.stdin.read()
ray.shutdown()
"""


def build(home: str, example: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=EXAMPLES / example,
        env={**os.environ, "BENTOML_HOME": home},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bentoml build of {example} failed: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


class Server:
    """One Bento served on its own Ray by ``python``, until ``stop``."""

    def __init__(
        self, python: str, tag: str, home: str, env: dict[str, str], options: object = None
    ) -> None:
        self.process = subprocess.Popen(
            [python, "-c", SERVER, tag, str(PORT), json.dumps(options or {})],
            env={**os.environ, "BENTOML_HOME": home, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "READY":
                return
        raise RuntimeError(f"{tag} did not start under {python}")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(30)


def _post(path: str, tenant: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}",
        json.dumps(ROWS).encode(),
        {"Content-Type": "application/json", "serve_multiplexed_model_id": tenant},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def _loads() -> float:
    """``Tenants``' loads in ``/metrics``, once a scrape reports them."""
    for _ in range(100):
        text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics").read().decode()
        found = re.search(r'bentoml_ray_model_loads_total\{service="Tenants"\} (\S+)', text)
        if found:
            return float(found.group(1))
        time.sleep(0.2)
    return 0.0


#: How ``Tenants`` is routed: bentoml-ray's default, Ray's own router (any
#: ``request_router_config`` replaces bentoml-ray's), and Ray's with routing by model id off.
ROUTINGS = {
    "bentoml-ray": ({}, {}),
    "Ray's": ({"request_router_config": {}}, {}),
    "off": ({"request_router_config": {}}, ROUTING_OFF),
}


def loads(home: str) -> None:
    tag = build(home, "tenants")
    print("mode        routing      wrong  loads (1st 400)  loads (2nd 400)")
    for mode, mode_env in (("default", {}), ("throughput", THROUGHPUT_MODE)):
        for routing, (options, routing_env) in ROUTINGS.items():
            tenants = {"Tenants": {"num_replicas": 2, **options}}
            server = Server(sys.executable, tag, home, {**mode_env, **routing_env}, tenants)
            try:
                counts, wrong = [], 0
                for seed in (1, 2):
                    before = _loads() if counts else 0.0
                    rng = random.Random(seed)
                    asked = [rng.choice(TENANTS) for _ in range(400)]
                    with ThreadPoolExecutor(6) as pool:
                        answers = list(pool.map(lambda t: _post("/predict", t), asked))
                    wrong += sum(a["model"] != t for t, a in zip(asked, answers, strict=True))
                    counts.append(_loads() - before)
                print(f"{mode:<11} {routing:<12} {wrong:<6} {counts[0]:<16.0f} {counts[1]:.0f}")
            finally:
                server.stop()


def cost(home: str, base_python: str, rounds: int, duration: int, connections: int) -> None:
    tag = build(home, "review_scorer")
    body = json.dumps({"reviews": ["great and fast", "slow and broken"]}).encode()
    url = f"http://127.0.0.1:{PORT}/score"
    rps: dict[str, list[float]] = {"this": [], "base": []}
    for number in range(rounds):
        order = ("this", "base") if number % 2 == 0 else ("base", "this")
        for name in order:
            python = sys.executable if name == "this" else base_python
            server = Server(python, tag, home, THROUGHPUT_MODE)
            try:
                wait_ok(url, body)
                run_wrk(url, body, "application/json", connections, 5)  # warm-up
                result = run_wrk(url, body, "application/json", connections, duration)
                rps[name].append(result["rps"])
                print(f"round {number + 1} {name}: {result['rps']:.0f} requests/s "
                      f"({result['errors']:.0f} errors)", flush=True)  # fmt: skip
            finally:
                server.stop()
    ratios = [this / base for this, base in zip(rps["this"], rps["base"], strict=True)]
    print(f"median of per-round ratios: {statistics.median(ratios):.3f}; ratio of medians: "
          f"{statistics.median(rps['this']) / statistics.median(rps['base']):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["loads", "cost"])
    parser.add_argument("--base-python", help="cost: the other install's Python")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bentoml-home-") as home:
        if args.what == "loads":
            loads(home)
        elif args.base_python is None:
            parser.error("cost needs --base-python")
        else:
            cost(home, args.base_python, args.rounds, args.duration, args.connections)


if __name__ == "__main__":
    main()
