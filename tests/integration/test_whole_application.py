"""What holds for the whole application, whichever replica answers: metrics, tasks, CORS,
deploying again in one process, and a service's environment taken from the driver's.

tests/fixtures/counted_service runs with two replicas behind Ray's proxy, which spreads
requests over both: ``/metrics`` must count every replica's requests on every read, and a
task submitted through one replica must be found, fetched, cancelled and retried through
the other. The iris example runs with BentoML's CORS configuration beside ``bentoml serve``
of the same Bento with the same configuration, and both are sent the same requests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _support import bentoml_serve, deployed, wait_until_ready
from prometheus_client.parser import text_string_to_metric_families

import bentoml_ray

pytestmark = pytest.mark.usefixtures("serve_url")

TOKEN = "token-from-the-driver"
#: Requests per test that counts them, and reads of ``/metrics`` after them.
REQUESTS, SCRAPES = 40, 8


@pytest.fixture(scope="module")
def counted_url(serve_url: str, counted_bento: str) -> Iterator[str]:
    os.environ["COUNTED_TOKEN"] = TOKEN  # an ``envs`` entry without a value: the driver's
    try:
        app = bentoml_ray.deployment(counted_bento, {"num_replicas": 2})
    finally:
        del os.environ["COUNTED_TOKEN"]
    with deployed(app, "counted", "/counted"):
        yield f"{serve_url}/counted"


def _metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _total(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(
        value for (sample, got), value in metrics.items() if sample == name and wanted <= got
    )


def _count(url: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/count", json={}, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_metrics_count_every_replicas_requests_on_every_read(counted_url: str) -> None:
    before = _metrics(counted_url)
    pids = {_count(counted_url)["pid"] for _ in range(REQUESTS)}
    assert len(pids) == 2, "Ray's proxy sent every request to one replica"
    started = time.perf_counter()
    reads = [_metrics(counted_url) for _ in range(SCRAPES)]
    per_read_ms = (time.perf_counter() - started) / SCRAPES * 1000
    ours = [
        _total(m, "counted_calls_total", kind="plain") - _total(before, "counted_calls_total")
        for m in reads
    ]
    bentoml_counts = [
        _total(m, "bentoml_service_request_total", endpoint="/count", http_response_code="200")
        - _total(
            before, "bentoml_service_request_total", endpoint="/count", http_response_code="200"
        )
        for m in reads
    ]
    print(f"counted_calls_total on each read: {ours}; a read took {per_read_ms:.1f} ms")
    assert ours == [REQUESTS] * SCRAPES
    assert bentoml_counts == [REQUESTS] * SCRAPES
    labels = {"endpoint": "/count", "service_name": "counted", "runner_name": "Counted"}
    assert _total(reads[-1], "bentoml_service_request_duration_seconds_count", **labels) >= REQUESTS
    # A gauge is each replica's own: the process IDs the replicas set, one per replica.
    pid_gauges = {
        (dict(got)["replica"], value)
        for (name, got), value in reads[-1].items()
        if name == "counted_pid"
    }
    assert {str(int(value)) for _, value in pid_gauges} == pids
    assert all(replica.startswith("Counted#") for replica, _ in pid_gauges)


def test_the_drivers_environment_fills_an_env_without_a_value(counted_url: str) -> None:
    assert _count(counted_url)["token"] == TOKEN


def _wait_for(url: str, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(f"{url}/square/status", params={"task_id": task_id}, timeout=30)
        assert answer.status_code == 200, answer.text  # found, through either replica
        if answer.json()["status"] != "in_progress" or time.monotonic() > deadline:
            return dict(answer.json())
        time.sleep(0.1)


def _id(task: dict[str, Any]) -> dict[str, str]:
    return {"task_id": task["task_id"]}


def test_tasks_are_found_through_any_replica(counted_url: str) -> None:
    submitted = [
        httpx.post(f"{counted_url}/square/submit", json={"n": n, "delay": 0.2}, timeout=30).json()
        for n in range(10)
    ]
    for n, task in enumerate(submitted):
        assert _wait_for(counted_url, task["task_id"])["status"] == "completed"
        for _ in range(2):  # either replica answers with the result
            got = httpx.get(f"{counted_url}/square/get", params=_id(task), timeout=30)
            assert (got.status_code, got.json()) == (200, n * n)
    retried = httpx.post(f"{counted_url}/square/retry", params=_id(submitted[3]), timeout=30)
    assert retried.status_code == 200 and retried.json()["task_id"] != submitted[3]["task_id"]
    assert _wait_for(counted_url, retried.json()["task_id"])["status"] == "completed"
    unknown = httpx.get(f"{counted_url}/square/status", params={"task_id": "nope"}, timeout=30)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "task_id not found"})


def test_a_cancel_through_any_replica_stops_the_task(counted_url: str) -> None:
    submit = httpx.post(f"{counted_url}/square/submit", json={"n": 4, "delay": 60}, timeout=30)
    task = _id(submit.json())
    # Under bentoml serve this answers 400 and the task runs on, then overwrites the mark.
    cancelled = httpx.put(f"{counted_url}/square/cancel", params=task, timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "canceled"
    statuses = {_wait_for(counted_url, task["task_id"])["status"] for _ in range(4)}
    assert statuses == {"canceled"}
    got = httpx.get(f"{counted_url}/square/get", params=task, timeout=30)
    assert got.status_code == 400, got.text
    again = httpx.put(f"{counted_url}/square/cancel", params=task, timeout=30)
    assert again.json()["status"] == "canceled"  # as it was
    unknown = httpx.put(f"{counted_url}/square/cancel", params={"task_id": "nope"}, timeout=30)
    assert unknown.status_code == 404


def test_a_killed_hub_loses_no_request_and_metrics_come_back(counted_url: str) -> None:
    """The hub is on no request's path: requests answer while it is replaced; ``/metrics``
    answers 503 rather than one replica's share while it is gone, then every replica's
    counts again (each replica reports its whole registry, not what changed)."""
    from _load import kill_replica, replica_actor_names, wait_replaced

    before = _total(_metrics(counted_url), "counted_calls_total", kind="plain")
    hub = replica_actor_names("counted", "Counted.hub")
    assert len(hub) == 1, hub
    kill_replica(hub[0])
    answers = [_count(counted_url) for _ in range(10)]  # each asserts its 200
    wait_replaced("counted", "Counted.hub", hub, 180)
    deadline = time.monotonic() + 60
    while (read := httpx.get(f"{counted_url}/metrics", timeout=30)).status_code != 200:
        assert read.status_code == 503, read.text
        assert time.monotonic() < deadline, "the metrics did not come back"
        time.sleep(1)
    after = _total(_metrics(counted_url), "counted_calls_total", kind="plain")
    assert after == before + len(answers)


def test_deploying_again_in_one_process_runs_the_newest_version(
    serve_url: str, counted_bento: str, counted_v2_bento: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTED_TOKEN", TOKEN)
    for _ in range(3):  # the service module makes its metrics at import, each time
        bentoml_ray.deployment(counted_bento)
        bentoml_ray.application_builder({"target": counted_bento})
    newer = counted_v2_bento  # the same source with VERSION = "2"
    assert newer != counted_bento
    with deployed(bentoml_ray.deployment(newer), "counted-v2", "/counted-v2"):
        assert _count(f"{serve_url}/counted-v2")["version"] == "2"


CORS_CONFIG = """\
api_server:
  http:
    cors:
      enabled: true
      access_control_allow_origins: ["http://bentoml.ai:8080"]
      access_control_allow_credentials: true
      access_control_allow_methods: ["GET", "POST", "OPTIONS"]
      access_control_allow_headers: ["content-type", "x-custom"]
      access_control_max_age: 1200
      access_control_expose_headers: ["x-served-by", "content-length"]
"""
ALLOWED, REFUSED = "http://bentoml.ai:8080", "http://elsewhere.example"
VIRGINICA = [[5.9, 3.0, 5.1, 1.8]]


@pytest.fixture(scope="module")
def cors_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cors") / "bentoml_config.yaml"
    path.write_text(CORS_CONFIG)
    return str(path)


@pytest.fixture(scope="module")
def cors_urls(serve_url: str, iris_bento: str, cors_config: str) -> Iterator[dict[str, str]]:
    """The iris example with BentoML's CORS configuration: on Ray, and under bentoml serve."""
    env = {"runtime_env": {"env_vars": {"BENTOML_CONFIG": cors_config}}}
    app = bentoml_ray.deployment(iris_bento, {"ray_actor_options": env})
    with (
        bentoml_serve(iris_bento, {**os.environ, "BENTOML_CONFIG": cors_config}) as url,
        deployed(app, "cors-iris", "/cors-iris"),  # while bentoml serve starts
    ):
        wait_until_ready(url)
        yield {"ray": f"{serve_url}/cors-iris", "bentoml": url}


def _cors(answer: httpx.Response) -> tuple[int, dict[str, str]]:
    headers = {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}
    if "access-control-allow-methods" in headers:  # the same methods, whatever their order
        headers["access-control-allow-methods"] = ", ".join(
            sorted(headers["access-control-allow-methods"].split(", "))
        )
    return answer.status_code, headers


@pytest.mark.parametrize(
    ("method", "origin", "headers"),
    [
        ("OPTIONS", ALLOWED, {"access-control-request-method": "POST",
                              "access-control-request-headers": "content-type, x-custom"}),
        ("OPTIONS", REFUSED, {"access-control-request-method": "POST"}),
        ("OPTIONS", ALLOWED, {"access-control-request-method": "DELETE"}),
        ("POST", ALLOWED, {}),
        ("POST", REFUSED, {}),
    ],
)  # fmt: skip
def test_cors_answers_as_under_bentoml_serve(
    cors_urls: dict[str, str], method: str, origin: str, headers: dict[str, str]
) -> None:
    answers = {
        where: _cors(
            httpx.request(
                method, f"{url}/classify", json=VIRGINICA if method == "POST" else None,
                headers={"origin": origin, **headers}, timeout=30,
            )
        )
        for where, url in cors_urls.items()
    }  # fmt: skip
    assert answers["ray"] == answers["bentoml"]
    status, cors = answers["ray"]
    if origin == ALLOWED and (
        method == "POST" or headers["access-control-request-method"] == "POST"
    ):
        assert cors["access-control-allow-origin"] == ALLOWED
        assert cors["access-control-allow-credentials"] == "true"
        key = "access-control-max-age" if method == "OPTIONS" else "access-control-expose-headers"
        assert cors[key] == ("1200" if method == "OPTIONS" else "x-served-by, content-length")
    else:
        assert status == 400 or "access-control-allow-origin" not in cors
