"""Sustained load at 64 connections on the iris example: no errors, no memory creep.

wrk (a separate process, as in benchmarks/) loads the example for a warm-up, then for
``SOAK_S`` seconds: 10 in the suite, which has a budget of its own; the soak of record is
``BENTOML_RAY_SOAK_S=60 pytest tests/integration/test_soak.py -s`` (figures in RELIABILITY.md). The
replicas' resident memory after the warm-up is compared with the end of the run: it must
grow by less than 10 % (leaked requests, responses or handles would add up over
~10^4-10^5 requests). The figures are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest
from _load import replica_pids, rss_bytes

import bentoml_ray

pytestmark = [
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]

SOAK_S = int(os.environ.get("BENTOML_RAY_SOAK_S", "10"))
WARM_UP_S = 5
CONNECTIONS = 64
BODY = [[5.9, 3.0, 5.1, 1.8]]


def wrk(url: str, duration_s: int) -> dict[str, float]:
    """Run wrk against ``url``; requests/s, non-2xx answers and socket errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        )
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--timeout", "30s",
             "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=duration_s + 120,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    assert requests and rps, out
    return {
        "requests": int(requests.group(1)),
        "rps": float(rps.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
        if socket_errors
        else 0,
    }


def test_sustained_load_at_64_connections_has_no_errors_and_no_memory_creep(
    four_bentos: dict[str, str],
) -> None:
    # The session's iris application (``four_bentos`` in conftest), with defaults but for
    # an environment variable: one replica of the API server and one of the runner.
    url = f"{four_bentos['iris']}/classify"
    api_server = bentoml_ray.api_server_deployment_name("iris_classifier")
    runner = bentoml_ray.runner_deployment_name("iris_classifier", "iris_clf")
    pids = replica_pids("four_iris", [api_server, runner])
    warm = wrk(url, WARM_UP_S)
    after_warm_up = {name: rss_bytes(pid) for name, pid in pids.items()}
    start = time.monotonic()
    soak = wrk(url, SOAK_S)
    elapsed = time.monotonic() - start
    at_end = {name: rss_bytes(pid) for name, pid in pids.items()}
    growth = {
        name.split("#")[0]: (at_end[name] - after_warm_up[name]) / after_warm_up[name]
        for name in pids
    }
    print(
        f"\n[soak] {SOAK_S} s x {CONNECTIONS} connections ({elapsed:.0f} s): "
        f"{soak['requests']} requests, {soak['rps']:.0f} req/s, "
        f"{soak['non_2xx']} non-2xx, {soak['socket_errors']} socket errors "
        f"(warm-up: {warm['requests']} requests, {warm['non_2xx'] + warm['socket_errors']} "
        "errors); RSS after warm-up -> end: "
        + ", ".join(
            f"{name.split('#')[0]} {after_warm_up[name] / 2**20:.0f} -> "
            f"{at_end[name] / 2**20:.0f} MiB"
            for name in pids
        )
    )
    assert soak["non_2xx"] == 0 and soak["socket_errors"] == 0, soak
    assert all(value < 0.10 for value in growth.values()), growth
