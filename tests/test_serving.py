"""The iris example served through the contract's example 1: layout, HTTP surface, bad input."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from _support import EXAMPLES, deployed, load_module

APP = "serving"

#: The compatibility suite (``-m compat``) runs this whole file on every supported version leg.
pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def iris_url(serve_url: str, iris_bento: str) -> Iterator[str]:
    example = load_module(EXAMPLES / "iris_classifier" / "bento_ray.py")  # as written
    with deployed(example.classifier, APP):
        yield serve_url


def test_classify(iris_url: str) -> None:
    response = httpx.post(f"{iris_url}/classify", json=[[5.9, 3.0, 5.1, 1.8], [5.1, 3.5, 1.4, 0.2]])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [2, 0]


def test_one_deployment_for_the_api_server_and_one_per_runner(iris_url: str) -> None:
    from ray import serve

    import bentoml_ray

    deployments = serve.status().applications[APP].deployments
    assert set(deployments) == {
        bentoml_ray.api_server_deployment_name("iris_classifier"),
        bentoml_ray.runner_deployment_name("iris_classifier", "iris_clf"),
    }
    assert set(deployments) == {"iris_classifier", "iris_classifier.runner.iris_clf"}


def test_bentoml_ray_alias() -> None:
    import bentoml

    import bentoml_ray

    assert bentoml.ray.deployment is bentoml_ray.deployment
    from bentoml.ray import deployment

    assert deployment is bentoml_ray.deployment


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz"])
def test_probes(iris_url: str, path: str) -> None:
    assert httpx.get(f"{iris_url}{path}").status_code == 200


def test_openapi_document_is_the_services_own(iris_url: str, iris_bento: str) -> None:
    import bentoml

    expected = bentoml.load(iris_bento).openapi_spec.asdict()
    response = httpx.get(f"{iris_url}/docs.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(expected))
    assert "/classify" in response.json()["paths"]


def test_swagger_ui_and_its_assets_load(iris_url: str) -> None:
    page = httpx.get(f"{iris_url}/")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    for asset in (
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ):
        assert httpx.get(f"{iris_url}/static_content/{asset}").status_code == 200, asset


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
    iris_url: str, case: str
) -> None:
    body, content_type, status, says = BAD_REQUESTS[case]
    started = time.monotonic()
    response = httpx.post(
        f"{iris_url}/classify", content=body, headers={"content-type": content_type}, timeout=10
    )
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.text
    assert says in response.json()
    assert elapsed < 1.0, f"answered in {elapsed:.2f} s"
    good = httpx.post(f"{iris_url}/classify", json=[[5.9, 3.0, 5.1, 1.8]])
    assert good.status_code == 200 and good.json() == [2]


def test_pickle_is_refused_on_every_route(iris_url: str) -> None:
    for path in ("/classify", "/docs.json", "/nonexistent"):
        response = httpx.post(
            f"{iris_url}{path}",
            content=b"\x80\x04",
            headers={"content-type": "Application/VND.bentoml+pickle; charset=binary"},
        )
        assert response.status_code == 415, path


def test_unknown_route_and_wrong_method(iris_url: str) -> None:
    assert httpx.post(f"{iris_url}/nope", json=[]).status_code == 404
    assert httpx.get(f"{iris_url}/classify").status_code == 405


def test_metrics_route_listed_in_the_openapi_document_answers(iris_url: str) -> None:
    response = httpx.get(f"{iris_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_swagger_ui_renders_the_apis_in_a_browser(iris_url: str, tmp_path: pathlib.Path) -> None:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path}", "--virtual-time-budget=15000",
            "--dump-dom", f"{iris_url}/",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # Swagger UI fetched docs.json and rendered one operation per route.
    assert 'data-path="/classify"' in done.stdout
    assert 'data-path="/readyz"' in done.stdout
