"""The API contract's examples, run as written (example 1 is in test_serving.py).

Example 2 goes through Ray Serve's own CLI, ``serve run``, against a ``ray start`` cluster
started here with enough logical CPUs for the replicas it asks for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from _support import BIN, EXAMPLES, RayCluster, delete_apps, deployed, load_module

import bentoml_ray

IRIS = EXAMPLES / "iris_classifier"

#: The compatibility suite (``-m compat``) runs this whole file on every supported version leg.
pytestmark = pytest.mark.compat

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]


def test_example_3_batching_as_written(serve_url: str, iris_bento: str) -> None:
    example = load_module(IRIS / "bento_ray_batched.py")

    async def classify_concurrently() -> list[Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            rows = [SETOSA if i % 2 else VIRGINICA for i in range(64)]
            responses = await asyncio.gather(
                *(client.post(f"{serve_url}/classify", json=[row]) for row in rows)
            )
            assert all(r.status_code == 200 for r in responses)
            return [r.json() for r in responses]

    with deployed(example.deploy, "contract_example_3"):
        assert asyncio.run(classify_concurrently()) == [[0] if i % 2 else [2] for i in range(64)]


def test_a_service_object_from_source_is_reimported_in_the_replicas(
    serve_url: str, iris_bento: str
) -> None:
    import bentoml

    svc = bentoml.load("service:svc", working_dir=str(IRIS), reload=True)
    assert svc.bento is None
    with deployed(bentoml_ray.deployment(svc), "from_source", route_prefix="/dev"):
        response = httpx.post(f"{serve_url}/dev/classify", json=[VIRGINICA])
        assert response.status_code == 200 and response.json() == [2]


STATUS_SCRIPT = """
import json, ray
from ray import serve
ray.init(log_to_driver=False)
app = serve.status().applications["default"]
print(json.dumps({"status": str(app.status.value), "replicas": {
    name: dict(d.replica_states) for name, d in app.deployments.items()}}))
"""


@pytest.mark.ray_behaviour  # Ray's CLI and cluster; loading the Bento is checked elsewhere
def test_example_2_through_serve_run_on_a_ray_start_cluster(
    ray_cluster: RayCluster, iris_bento: str
) -> None:
    env, url = ray_cluster.env, ray_cluster.serve_url
    try:
        _run_example_2(env, url)
    finally:  # its replicas hold 4 of the cluster's CPUs: the later cluster tests need them
        delete_apps(ray_cluster, "default")


def _run_example_2(env: dict[str, str], url: str) -> None:
    done = subprocess.run(
        [str(BIN / "serve"), "run", "bento_ray_scaled:classifier", "--non-blocking"],
        cwd=IRIS, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    status = subprocess.run(
        [sys.executable, "-c", STATUS_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr[-3000:]
    observed = json.loads(status.stdout.strip().splitlines()[-1])
    assert observed["status"] == "RUNNING"
    assert observed["replicas"] == {
        "iris_classifier": {"RUNNING": 3},
        "iris_classifier.runner.iris_clf": {"RUNNING": 1},
        "iris_classifier.hub": {"RUNNING": 1},  # every application's
    }

    response = httpx.post(f"{url}/classify/classify", json=[VIRGINICA, SETOSA], timeout=30)
    assert response.status_code == 200 and response.json() == [2, 0]
    assert httpx.get(f"{url}/classify/docs.json").status_code == 200
    index = httpx.get(f"{url}/classify", follow_redirects=True)  # the prefix's Swagger UI
    assert index.status_code == 200 and "swagger-ui" in index.text
