"""A real two-node Ray cluster: the Bento reaches a node whose BentoML store lacks it.

The session's ``ray_cluster`` (conftest) is two ``ray start`` processes on loopback; the
second has an empty ``BENTOML_HOME`` and the custom resource ``far``. Each test runs a
driver in its own process that connects through ``RAY_ADDRESS`` (with Ray's token
authentication, as ``ray start`` sets it), pins every replica to the far node through
that resource, and deploys:

- by default, from a store that the driver deletes right after ``deployment()``, so the
  replicas can only have the Bento from the driver node's ``BentoDepot``;
- with ``bento_uri``, from a ``bentoml export`` archive, by a driver whose store is empty:
  every node fetches it, once, into its own cache.

Each test starts with the far node's cache empty (``empty_far_cache``) and sees its
Bentos arrive there: a copy an earlier test left would otherwise be served as it is.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from _support import RayCluster, cached_bentos, delete_apps, run_driver

#: The drivers find the replicas' nodes with Ray's state API, which the dashboard serves.
pytestmark = pytest.mark.ray_dashboard

VIRGINICA = [5.9, 3.0, 5.1, 1.8]

DRIVER = """
import json, os, shutil, sys, time
import httpx, ray
from ray import serve
from ray.util.state import list_actors
import bentoml_ray

spec = json.loads(sys.argv[1])
apps = []
for app in spec["apps"]:
    pin = {"ray_actor_options": {"num_cpus": 0.1, "resources": {"far": 1}}}
    runners = {name: {**pin, **extra} for name, extra in app["others"].items()}
    apps.append((app, bentoml_ray.deployment(
        app["tag"], pin, runners, bento_uri=spec.get("bento_uri"))))
if spec.get("delete_store"):
    shutil.rmtree(os.environ["BENTOML_HOME"])  # from here on, only Ray has the Bento
ray.init(log_to_driver=False)  # RAY_ADDRESS, RAY_AUTH_MODE and the token from the env
far = {n["NodeID"] for n in ray.nodes() if n["Alive"] and "far" in n["Resources"]}
report = {}
start = time.monotonic()
try:  # side by side where Ray can (serve.run_many), else one after another
    if hasattr(serve, "run_many"):
        serve.run_many([serve.RunTarget(application, name=app["name"], route_prefix=app["prefix"])
                        for app, application in apps])
    else:
        for app, application in apps:
            serve.run(application, name=app["name"], route_prefix=app["prefix"])
except RuntimeError:
    for app, _ in apps:
        status = serve.status().applications.get(app["name"])
        for name, d in (status.deployments if status else {}).items():
            print(name, d.status, d.message, file=sys.stderr)
    raise
for app, application in apps:
    url = spec["serve_url"] + app["prefix"] + app["path"]
    while (answer := httpx.post(url, json=app["body"], timeout=30)).status_code != 200:
        assert time.monotonic() - start < 120, (answer.status_code, answer.text)
        time.sleep(0.2)
    nodes = {a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10000)
             if a.class_name.startswith(f"ServeReplica:{app['name']}:")
             and not a.class_name.endswith(".hub")}  # the hub loads no Bento: anywhere
    report[app["name"]] = {"first_200_s": round(time.monotonic() - start, 1),  # from the deploy
                           "answer": answer.json(), "on_far_node_only": nodes == far}
print(json.dumps(report))
"""


def _drive(cluster: RayCluster, spec: dict[str, Any], store: str) -> dict[str, Any]:
    spec = {**spec, "serve_url": cluster.serve_url}
    return run_driver(DRIVER, spec, {**cluster.env, "BENTOML_HOME": store})


def test_a_bento_shipped_through_ray_serves_on_a_node_without_it(
    ray_cluster: RayCluster,
    empty_far_cache: pathlib.Path,
    bentoml_home: str,
    bento_builds: dict[str, Future[str]],
    iris_bento: str,
    review_scorer_bento: str,
) -> None:
    for build in bento_builds.values():  # none still writing into the store it copies
        build.result()
    store = tempfile.mkdtemp(prefix="driver-store-")
    shutil.copytree(bentoml_home, store, dirs_exist_ok=True)
    spec = {
        "delete_store": True,
        "apps": [
            {"name": "far_iris", "tag": iris_bento, "prefix": "/far-iris", "path": "/classify",
             "body": [VIRGINICA], "others": {"iris_clf": {}}},
            {"name": "far_scorer", "tag": review_scorer_bento, "prefix": "/far-scorer",
             "path": "/score", "body": {"reviews": ["great, loved it"]},
             "others": {"Preprocessor": {}}},
        ],
    }  # fmt: skip
    try:
        report = _drive(ray_cluster, spec, store)
    finally:
        delete_apps(ray_cluster, "far_iris", "far_scorer")
    assert not os.path.exists(store)
    assert report["far_iris"]["answer"] == [2]
    assert report["far_iris"]["on_far_node_only"]
    assert report["far_scorer"]["on_far_node_only"]
    far_bentos = pathlib.Path(ray_cluster.far_home) / "bentos"  # the far node's own store
    assert not far_bentos.exists() or not any(far_bentos.iterdir())
    # The replicas had them from the depot: each copy arrived in the far node's cache.
    assert cached_bentos(empty_far_cache) == {iris_bento, review_scorer_bento}


def test_a_bento_from_a_uri_serves_with_no_store_anywhere(
    ray_cluster: RayCluster, empty_far_cache: pathlib.Path, iris_bento: str
) -> None:
    import bentoml

    exported = tempfile.mkdtemp(prefix="exported-")
    archive = bentoml.export_bento(iris_bento, os.path.join(exported, "iris.bento"))
    empty_store = tempfile.mkdtemp(prefix="empty-store-")
    spec = {
        "bento_uri": pathlib.Path(archive).as_uri(),
        "apps": [
            {"name": "uri_iris", "tag": iris_bento.split(":")[0], "prefix": "/uri-iris",
             "path": "/classify", "body": [VIRGINICA],
             "others": {"iris_clf": {"num_replicas": 2}}},
        ],
    }  # fmt: skip
    try:
        report = _drive(ray_cluster, spec, empty_store)
        # Three replicas on the far node, one copy there: fetched once, shared.
        name, version = iris_bento.split(":")
        fetched = empty_far_cache / "bentos" / name
        assert [p.name for p in fetched.iterdir()] == [version]
        assert (fetched / version / "models").is_dir()
        assert httpx.post(
            f"{ray_cluster.serve_url}/uri-iris/classify", json=[VIRGINICA], timeout=30
        ).json() == [2]
    finally:
        delete_apps(ray_cluster, "uri_iris")
        shutil.rmtree(exported, ignore_errors=True)
    assert report["uri_iris"]["answer"] == [2]
    assert report["uri_iris"]["on_far_node_only"]
    assert not (pathlib.Path(empty_store) / "bentos").exists() or not any(
        (pathlib.Path(empty_store) / "bentos").iterdir()
    )
