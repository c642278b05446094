"""One application spread over both nodes of the ``ray start`` cluster, one replica each.

tests/fixtures/counted_service runs with two root replicas, at most one per node, and the
head's proxy sends requests to both (the cluster's proxy does not prefer its own node, as
when a load balancer spreads clients over every node's proxy). What a client sees must
not depend on which node answers: tasks submitted through one are polled, fetched,
cancelled and retried through either; ``/metrics`` counts both nodes' requests on every
read; and each node's Ray metrics endpoint exports the BentoML metrics of the replica it
hosts, with its deployment and replica labels.
"""

from __future__ import annotations

from typing import Any

from _support import RayCluster, delete_apps, run_driver

DRIVER = """
import json, sys, time
import httpx, ray
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
import bentoml_ray

spec = json.loads(sys.argv[1])
url = spec["serve_url"] + "/spread"
one_per_node = {"num_replicas": 2, "max_replicas_per_node": 1,
                "ray_actor_options": {"num_cpus": 0.1}}
app = bentoml_ray.deployment(spec["tag"], one_per_node)
ray.init(log_to_driver=False)  # RAY_ADDRESS, RAY_AUTH_MODE and the token from the env
serve.run(app, name="spread", route_prefix="/spread")
report = {}

def get(path, **params):
    return httpx.get(url + path, params=params, timeout=30)

def submit(**body):
    return httpx.post(url + "/square/submit", json=body, timeout=30).json()["task_id"]

def settled(task_id):
    deadline = time.monotonic() + 30
    while True:
        answer = get("/square/status", task_id=task_id)
        report["polls"] += 1
        report["polls_not_found"] += answer.status_code == 404
        if answer.status_code == 200 and answer.json()["status"] != "in_progress":
            return answer.json()["status"]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)

nodes = {}
for _ in range(spec["requests"]):
    node = httpx.post(url + "/count", json={}, timeout=30).json()["node"]
    nodes[node] = nodes.get(node, 0) + 1
report["answers_by_node"] = sorted(nodes.values())

report.update(polls=0, polls_not_found=0, fetched=0)
tasks = {n: submit(n=n, delay=0.2) for n in range(spec["tasks"])}
for n, task_id in tasks.items():
    settled(task_id)
    for _ in range(2):  # the result through either node
        got = get("/square/get", task_id=task_id)
        report["fetched"] += got.status_code == 200 and got.json() == n * n
long = submit(n=3, delay=120)
cancelled = httpx.put(url + "/square/cancel", params={"task_id": long}, timeout=30)
report["cancel"] = cancelled.status_code
report["after_cancel"] = sorted({settled(long) for _ in range(6)})
retried = httpx.post(url + "/square/retry", params={"task_id": tasks[0]}, timeout=30).json()
report["retried"] = settled(retried["task_id"])

def counted(text, name, **labels):
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

report["counted_on_each_read"] = [
    counted(get("/metrics").text, "counted_calls_total", kind="plain") for _ in range(8)]
started = time.perf_counter()
for _ in range(10):
    get("/metrics")
report["read_ms"] = round((time.perf_counter() - started) * 100, 1)

endpoints = [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
             for n in ray.nodes() if n["Alive"]]
exported, deadline = {}, time.monotonic() + 60  # the agents export every 2 s here
while time.monotonic() < deadline and sum(exported.values()) < spec["requests"]:
    time.sleep(2)
    for endpoint in endpoints:
        exported[endpoint] = counted(
            httpx.get(endpoint, timeout=10).text, "ray_bentoml_service_request_total",
            deployment="Counted", application="spread", endpoint="/count")
report["exported_by_node"] = sorted(v for v in exported.values() if v)
print(json.dumps(report))
"""

REQUESTS, TASKS = 40, 10


def _drive(cluster: RayCluster, tag: str) -> dict[str, Any]:
    spec = {"tag": tag, "serve_url": cluster.serve_url, "requests": REQUESTS, "tasks": TASKS}
    return run_driver(DRIVER, spec, {**cluster.env, "COUNTED_TOKEN": "spread"})


def test_tasks_and_metrics_do_not_depend_on_the_node_that_answers(
    ray_cluster: RayCluster, counted_bento: str
) -> None:
    try:
        report = _drive(ray_cluster, counted_bento)
    finally:
        delete_apps(ray_cluster, "spread")
    assert len(report["answers_by_node"]) == 2, "every request went to one node"
    assert report["polls_not_found"] == 0
    assert report["fetched"] == 2 * TASKS
    assert report["cancel"] == 200 and report["after_cancel"] == ["canceled"]
    assert report["retried"] == "completed"
    assert report["counted_on_each_read"] == [REQUESTS] * 8
    # Each node's Ray metrics endpoint has the requests its own replica answered.
    assert len(report["exported_by_node"]) == 2
    assert sum(report["exported_by_node"]) == REQUESTS
