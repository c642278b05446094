"""The iris example served through the contract's example 1 on Ray: answers, layout, Swagger UI.

The rest of its HTTP surface (probes, docs, bad input, pickle, ``/metrics``) is checked on
its ingress in process, without Ray: ``unit/test_iris_http.py``.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from _support import EXAMPLES, deployed, load_module

APP = "serving"


@pytest.fixture(scope="module")
def iris_url(serve_url: str, iris_bento: str) -> Iterator[str]:
    example = load_module(EXAMPLES / "iris_classifier" / "bento_ray.py")  # as written
    with deployed(example.classifier, APP):
        yield serve_url


@pytest.mark.compat
def test_classify(iris_url: str) -> None:
    response = httpx.post(f"{iris_url}/classify", json=[[5.9, 3.0, 5.1, 1.8], [5.1, 3.5, 1.4, 0.2]])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [2, 0]
    # Where the runner's model calls ran (inline or in its thread) reaches /metrics.
    metrics = httpx.get(f"{iris_url}/metrics", timeout=30).text
    assert re.search(r'bentoml_ray_runner_calls_total\{[^}]*method="predict"', metrics), metrics


@pytest.mark.compat
def test_one_deployment_for_the_api_server_and_one_per_runner(iris_url: str) -> None:
    from ray import serve

    import bentoml_ray

    deployments = serve.status().applications[APP].deployments
    assert set(deployments) == {
        bentoml_ray.api_server_deployment_name("iris_classifier"),
        bentoml_ray.runner_deployment_name("iris_classifier", "iris_clf"),
        bentoml_ray.hub_deployment_name("iris_classifier"),
    }
    assert set(deployments) == {
        "iris_classifier", "iris_classifier.runner.iris_clf", "iris_classifier.hub"
    }  # fmt: skip


@pytest.mark.compat
def test_bentoml_ray_alias() -> None:
    import bentoml

    import bentoml_ray

    assert bentoml.ray.deployment is bentoml_ray.deployment
    from bentoml.ray import deployment

    assert deployment is bentoml_ray.deployment


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
