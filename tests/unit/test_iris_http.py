"""The iris example's HTTP surface on its public ingress, in process: what a client sees.

The same Bento, built from ``examples/iris_classifier``, its runner embedded (a call is a
method call, as in an embedded runner's API server), behind the ingress that its API-server
replicas serve (``integration/test_serving`` sends real requests to it on Ray).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import bentoml
import pytest
from starlette.testclient import TestClient

from bentoml_ray._runners.api_server import runner_ingress
from bentoml_ray._runners.local_runner import LocalRunnerHandle

#: The compatibility suite (``-m compat``) runs this whole file on every supported version leg.
pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def client(iris_bento: str) -> Iterator[TestClient]:
    svc: Any = bentoml.load(iris_bento, reload=True)
    for runner in svc.runners:
        runner.init_client(LocalRunnerHandle, {})
    with TestClient(runner_ingress(svc, "/")) as test_client:
        yield test_client


def test_classify(client: TestClient) -> None:
    response = client.post("/classify", json=[[5.9, 3.0, 5.1, 1.8], [5.1, 3.5, 1.4, 0.2]])
    assert response.status_code == 200 and response.json() == [2, 0]


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz"])
def test_probes(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_openapi_document_is_the_services_own(client: TestClient, iris_bento: str) -> None:
    expected = bentoml.load(iris_bento).openapi_spec.asdict()
    response = client.get("/docs.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(expected))
    assert "/classify" in response.json()["paths"]


def test_swagger_ui_and_its_assets_load(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    for asset in (
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ):
        assert client.get(f"/static_content/{asset}").status_code == 200, asset


BAD_REQUESTS = {
    "malformed JSON": (b"[[5.9, 3.0", "application/json", 400, "not valid JSON"),
    "empty body": (b"", "application/json", 400, "empty"),
    "wrong content type": (b"[[5.9, 3.0, 5.1, 1.8]]", "text/plain", 415, "application/json"),
    "form content type": (b"a=1", "application/x-www-form-urlencoded", 415, "application/json"),
    "non-UTF-8 bytes": (b"\xff\xfe\x00[", "application/json", 400, "UTF-8"),
    "string array, wrong shape": (b'[["a", "b"]]', "application/json", 400, "shape"),
    "string array, right shape": (b'[["a", "b", "c", "d"]]', "application/json", 400, "dtype"),
    "JSON object": (b'{"a": 1}', "application/json", 400, "could not decode"),
    "pickle media type": (
        b"\x80\x04\x95",
        "application/vnd.bentoml+pickle",
        415,
        "internal to BentoML",
    ),
    "runner payload media type": (b"\x80\x04", "application/vnd.bentoml.ndarray", 415, "internal"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_request_gets_a_4xx_that_says_why_and_the_server_keeps_serving(
    client: TestClient, case: str
) -> None:
    body, content_type, status, says = BAD_REQUESTS[case]
    response = client.post("/classify", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert says in response.json()
    good = client.post("/classify", json=[[5.9, 3.0, 5.1, 1.8]])
    assert good.status_code == 200 and good.json() == [2]


def test_pickle_is_refused_on_every_route(client: TestClient) -> None:
    for path in ("/classify", "/docs.json", "/nonexistent"):
        response = client.post(
            path,
            content=b"\x80\x04",
            headers={"content-type": "Application/VND.bentoml+pickle; charset=binary"},
        )
        assert response.status_code == 415, path


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert client.post("/nope", json=[]).status_code == 404
    assert client.get("/classify").status_code == 405


def test_metrics_route_listed_in_the_openapi_document_answers(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
