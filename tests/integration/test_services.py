"""BentoML 1.2+ services on Ray Serve: layout, dependency calls, config, batching, streaming.

The composed example (examples/review_scorer) and a diamond-shaped graph
(tests/fixtures/service_graph) are deployed on the session's Ray; the example is also
served by ``bentoml serve`` so that both can be sent the same requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import bentoml
import httpx
import pytest
from _support import EXAMPLES, bentoml_serve, deployed, wait_until_ready
from ray import serve

import bentoml_ray
from bentoml_ray import InvalidDeploymentConfig

REVIEWS = ["Great phone, love it!", "awful and SLOW", "fine"]


@pytest.fixture(scope="module")
def scorer_url(serve_url: str, review_scorer_bento: str) -> Iterator[str]:
    with deployed(bentoml_ray.deployment(review_scorer_bento), "scorer", "/scorer"):
        yield f"{serve_url}/scorer"


@pytest.fixture(scope="module")
def graph_url(serve_url: str, graph_bento: str) -> Iterator[str]:
    app = bentoml_ray.deployment(graph_bento, None, {"Leaf": {"num_replicas": 1}})
    with deployed(app, "graph", "/graph"):
        yield f"{serve_url}/graph"


@pytest.fixture(scope="module")
def bentoml_serve_url(review_scorer_bento: str) -> Iterator[str]:
    """The same Bento under ``bentoml serve``, for side-by-side answers."""
    with bentoml_serve(review_scorer_bento) as url:
        wait_until_ready(url)
        yield url


@pytest.mark.compat
def test_one_deployment_per_service(scorer_url: str) -> None:
    deployments = serve.status().applications["scorer"].deployments
    assert set(deployments) == {"ReviewScorer", "Preprocessor", "ReviewScorer.hub"}


@pytest.mark.compat
def test_score_calls_the_dependency_over_a_handle(scorer_url: str) -> None:
    answer = httpx.post(f"{scorer_url}/score", json={"reviews": REVIEWS}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [4.0, -2.5, 0.5]


@pytest.mark.compat
def test_batchable_api_forms_batches_under_concurrency(scorer_url: str) -> None:
    def score(i: int) -> int:
        body = {"reviews": [f"good {i}"]}
        return httpx.post(f"{scorer_url}/score", json=body, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        assert set(pool.map(score, range(96))) == {200}
    stats = httpx.post(f"{scorer_url}/stats", json={}, timeout=30).json()
    assert 1 < stats["largest_batch"] <= 32, stats
    # The sizes reach /metrics, for benchmarks and dashboards to see how batches formed.
    metrics = httpx.get(f"{scorer_url}/metrics", timeout=30).text
    assert 'function="ReviewScorer.score"' in metrics, metrics


@pytest.mark.compat
def test_streaming_api_sends_the_first_chunk_before_the_generator_ends(scorer_url: str) -> None:
    review = "great good love fine fast bad slow awful broken hate"
    started = time.monotonic()
    arrivals: list[float] = []
    chunks: list[str] = []
    with httpx.stream("POST", f"{scorer_url}/explain", json={"review": review}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for chunk in answer.iter_text():
            arrivals.append(time.monotonic() - started)
            chunks.append(chunk)
    assert "".join(chunks).endswith("total -1.5\n")
    assert len(arrivals) > 5
    # Ten words at 50 ms each: the first one must not wait for the other nine.
    assert arrivals[0] < arrivals[-1] - 0.3, arrivals


CONFORMANCE: list[tuple[str, str, bytes, str]] = [
    ("POST", "/score", b'{"reviews": ["great", "bad and slow"]}', "application/json"),
    ("POST", "/explain", b'{"review": "great but slow"}', "application/json"),
    ("POST", "/score", b'{"reviews": ["great"', "application/json"),
    ("POST", "/score", b"", "application/json"),
    ("POST", "/score", b'{"reviews": "not a list"}', "application/json"),
    ("POST", "/score", b'{"review": ["wrong field"]}', "application/json"),
    ("POST", "/score", b'{"reviews": [1, 2]}', "application/json"),
    ("POST", "/score", b"\xff\xfe\x00", "application/json"),
    ("POST", "/score", b"great", "text/plain"),
    ("POST", "/nowhere", b"{}", "application/json"),
    ("GET", "/score", b"", "application/json"),
    ("GET", "/readyz", b"", "application/json"),
    ("GET", "/livez", b"", "application/json"),
]


@pytest.mark.parametrize(("method", "path", "body", "content_type"), CONFORMANCE)
def test_answers_match_bentoml_serve(
    scorer_url: str, bentoml_serve_url: str, method: str, path: str, body: bytes,
    content_type: str,
) -> None:  # fmt: skip
    def ask(base: str) -> tuple[int, str]:
        answer = httpx.request(
            method, base + path, content=body, headers={"content-type": content_type},
            timeout=30,
        )  # fmt: skip
        return answer.status_code, answer.text

    ray_status, ray_body = ask(scorer_url)
    assert ray_status < 500 or path == "/nowhere", ray_body
    assert (ray_status, ray_body) == ask(bentoml_serve_url)


def test_openapi_document_matches_bentoml_serve(scorer_url: str, bentoml_serve_url: str) -> None:
    ours = httpx.get(f"{scorer_url}/docs.json", timeout=30).json()
    theirs = httpx.get(f"{bentoml_serve_url}/docs.json", timeout=30).json()
    assert ours["paths"].keys() == theirs["paths"].keys()
    assert ours["components"] == theirs["components"]


@pytest.mark.compat
def test_pickle_is_refused_at_the_public_ingress(scorer_url: str) -> None:
    answer = httpx.post(
        f"{scorer_url}/score", content=b"\x80\x04.",
        headers={"content-type": "application/vnd.bentoml+pickle"},
    )  # fmt: skip
    assert answer.status_code == 415 and "internal to BentoML" in answer.json()["error"]


def test_bentoml_clients_work_against_ray(scorer_url: str) -> None:
    with bentoml.SyncHTTPClient(scorer_url) as client:
        assert client.score(reviews=["great"]) == [2.0]
        assert "".join(client.explain(review="bad")).endswith("total -1.0\n")

    async def use_async_client() -> list[float]:
        async with bentoml.AsyncHTTPClient(scorer_url) as client:
            return list(await client.score(reviews=["love", "hate"]))

    assert asyncio.run(use_async_client()) == [2.0, -2.0]


def test_every_form_of_dependency_call(graph_url: str) -> None:
    sync = httpx.post(f"{graph_url}/sync_forms", json={}, timeout=30)
    assert sync.json() == {"default": "a", "to_sync_of_async": "B", "stream": ["0", "1", "2"]}
    asynchronous = httpx.post(f"{graph_url}/async_forms", json={}, timeout=30)
    assert asynchronous.json() == {"default": "C", "to_async_of_sync": "d", "stream": ["0", "1"]}


def test_a_shared_dependency_is_deployed_once(graph_url: str) -> None:
    deployments = serve.status().applications["graph"].deployments
    assert set(deployments) == {"Root", "Left", "Right", "Leaf", "Root.hub"}
    pids = httpx.post(f"{graph_url}/diamond", json={}, timeout=30).json()
    assert pids["left"] == pids["right"] == pids["root"], pids


def test_service_config_becomes_ray_options(graph_url: str) -> None:
    root = serve.status().applications["graph"].deployments["Root"]
    assert sum(root.replica_states.values()) == 2  # workers=2
    replica = httpx.post(f"{graph_url}/replica", json={}, timeout=30).json()
    assert replica["started"] is True  # @bentoml.on_startup ran before traffic
    assert replica["colour"] == "blue"  # the service's envs
    assert replica["shape"] == "diamond"  # the bentofile's envs
    assert replica["prepared"] == "yes"  # @bentoml.on_deployment ran in the replica
    assert replica["resources"]["CPU"] == 0.5  # resources.cpu "500m"
    assert replica["resources"]["memory"] == 64 * 2**20  # resources.memory "64Mi"


def test_context_sets_status_and_headers(graph_url: str) -> None:
    answer = httpx.post(f"{graph_url}/created", json={"name": "x"}, timeout=30)
    assert answer.status_code == 201 and answer.headers["x-created"] == "x"


def test_task_endpoints(graph_url: str) -> None:
    submitted = httpx.post(f"{graph_url}/square/submit", json={"n": 7}, timeout=30).json()
    task = {"task_id": submitted["task_id"]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = httpx.get(f"{graph_url}/square/status", params=task, timeout=30).json()
        if status["status"] != "in_progress":
            break
        time.sleep(0.2)
    assert status["status"] == "completed", status
    assert httpx.get(f"{graph_url}/square/get", params=task, timeout=30).json() == 49


def test_a_failing_dependency_is_a_500_and_the_server_keeps_serving(graph_url: str) -> None:
    answer = httpx.post(f"{graph_url}/leaf_error", json={}, timeout=30)
    assert answer.status_code == 500
    assert "unexpected error" in answer.json()["error"]
    assert httpx.post(f"{graph_url}/sync_forms", json={}, timeout=30).status_code == 200


def test_a_service_class_is_a_target(serve_url: str) -> None:
    # What ``from service import ReviewScorer`` gives in the example's folder.
    folder = str(EXAMPLES / "review_scorer")
    scorer = bentoml.load("service:ReviewScorer", working_dir=folder, reload=True)
    assert scorer.bento is None
    app = bentoml_ray.deployment(scorer, enable_batching=False)
    with deployed(app, "from_class", "/from-class"):
        answer = httpx.post(f"{serve_url}/from-class/score", json={"reviews": ["great"]})
        assert answer.json() == [2.0]

        def score(i: int) -> int:
            return httpx.post(
                f"{serve_url}/from-class/score", json={"reviews": [f"{i}"]}, timeout=30
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            assert set(pool.map(score, range(48))) == {200}
        stats = httpx.post(f"{serve_url}/from-class/stats", json={}, timeout=30).json()
        assert stats["largest_batch"] == 1  # enable_batching=False: every call alone


def _raises(match: str, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidDeploymentConfig, match=match) as info:
        bentoml_ray.deployment(*args, **kwargs)
    return str(info.value)


def test_unknown_dependency_name_lists_the_services(graph_bento: str) -> None:
    message = _raises("names service 'Leaff'", graph_bento, None, {"Leaff": {}})
    assert "Did you mean 'Leaf'?" in message
    assert "Its dependency services:" in message and "Right" in message


def test_root_options_belong_in_the_second_argument(graph_bento: str) -> None:
    _raises("the root service", graph_bento, None, {"Root": {"num_replicas": 1}})


def test_unknown_option_of_a_dependency(graph_bento: str) -> None:
    options = {"Leaf": {"replicas": 1}}
    _raises("Unknown option 'replicas' for service 'Leaf'", graph_bento, None, options)


def test_batching_config_is_checked_against_the_services(review_scorer_bento: str) -> None:
    _raises("names service 'Scorer'", review_scorer_bento, batching_config={"Scorer": {}})
    _raises(
        "names method 'scores'", review_scorer_bento,
        batching_config={"ReviewScorer": {"scores": {}}},
    )  # fmt: skip
    message = _raises(
        "not batchable", review_scorer_bento, batching_config={"ReviewScorer": {"explain": {}}}
    )
    assert "@bentoml.api(batchable=True)" in message and "score" in message
    _raises(
        "enable_batching is False", review_scorer_bento, enable_batching=False,
        batching_config={"ReviewScorer": {"score": {"max_batch_size": 4}}},
    )  # fmt: skip


def test_options_from_the_service_and_the_user(review_scorer_bento: str) -> None:
    from bentoml_ray._services.service_options import api_methods, deployment_defaults

    root = bentoml.load(review_scorer_bento)
    assert deployment_defaults(root) == {"max_ongoing_requests": 64}
    preprocessor = root.find_dependent_by_name("Preprocessor")
    assert deployment_defaults(preprocessor) == {
        "ray_actor_options": {"num_cpus": 1.0},
        "max_ongoing_requests": 100,
    }
    score = api_methods(root)["score"]
    assert score.defaults == {"max_batch_size": 32, "batch_wait_timeout_s": 0.0}
    assert not api_methods(root)["explain"].batchable


def test_metrics_count_the_roots_requests_and_the_dependencys_calls(scorer_url: str) -> None:
    """As ``bentoml serve``'s servers count them: the root's HTTP requests and the calls its
    dependency answers, each under its own ``runner_name``, read through the root."""
    from prometheus_client.parser import text_string_to_metric_families

    def counts() -> dict[tuple[str, str], float]:
        text = httpx.get(f"{scorer_url}/metrics", timeout=30).text
        return {
            (s.labels["runner_name"], s.labels["endpoint"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "bentoml_service_request_total" and s.labels["http_response_code"] == "200"
        }

    before = counts()
    for _ in range(3):
        httpx.post(f"{scorer_url}/score", json={"reviews": REVIEWS}, timeout=30).raise_for_status()
    after = counts()

    def grew(key: tuple[str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew(("ReviewScorer", "/score")) == 3
    assert grew(("Preprocessor", "/normalize")) >= 1  # batched: one call may carry several
