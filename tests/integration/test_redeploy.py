"""Redeploying the iris example with a new Bento version while traffic flows: no client
request may fail.

``serve.run`` of the same application name with the new version: Ray replaces every
replica of both deployments (API server and runner, two each), one at a time (a fifth of
a deployment's replicas, at least one), draining each old replica before it stops, while
the others serve; the API server's calls go to whichever runner replicas run. The load is
paced, so that the new replicas start in seconds rather than half a minute. (A change of
``num_replicas`` alone starts or drains replicas in the same way, without replacing the
others.) The figures are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import time

import httpx
import pytest
from _load import Load, replica_actor_names

import bentoml_ray

pytestmark = pytest.mark.usefixtures("serve_url")

APP = "redeploy-iris"
DEPLOYMENTS = ("iris_classifier", "iris_classifier.runner.iris_clf")
CONNECTIONS = 4
#: Each client's pause between requests: at most 80 requests/s, about half of what the
#: example serves here, so that new replicas start in seconds, not half a minute, while
#: requests still arrive throughout.
PAUSE_S = 0.05
#: Answers to wait for before and after the redeploy, so that it runs under load.
AROUND = 50


def _is_virginica(response: httpx.Response) -> bool:
    return bool(response.json() == [2])


def _replicas() -> set[str]:
    return {name for d in DEPLOYMENTS for name in replica_actor_names(APP, d)}


def test_redeploying_a_new_version_under_load_fails_no_request(
    serve_url: str, iris_bento: str, iris_v2_bento: str
) -> None:
    from ray import serve

    def run(tag: str) -> None:
        app = bentoml_ray.deployment(tag, {"num_replicas": 2}, {"iris_clf": {"num_replicas": 2}})
        serve.run(app, name=APP, route_prefix=f"/{APP}")

    new_version = iris_v2_bento
    assert new_version != iris_bento
    run(iris_bento)
    try:
        old_replicas = _replicas()
        assert len(old_replicas) == 4, old_replicas
        url = f"{serve_url}/{APP}/classify"
        body = [[5.9, 3.0, 5.1, 1.8]]
        with Load(url, body, CONNECTIONS, check=_is_virginica, pause_s=PAUSE_S) as load:
            load.wait_for(AROUND)
            start = time.monotonic()
            run(new_version)
            took = time.monotonic() - start
            deadline = time.monotonic() + 120  # old replicas drain before they stop
            while old_replicas & _replicas():
                assert time.monotonic() < deadline, "the old version's replicas are still there"
                time.sleep(0.2)
            load.wait_for(len(load.outcomes) + AROUND)
        longest = max(outcome.end - outcome.start for outcome in load.outcomes)
        print(
            f"\n[redeploy] new Bento version {new_version}: serve.run took {took:.1f} s; "
            f"{load.summary()}; the longest request {longest:.1f} s"
        )
    finally:
        serve.delete(APP)
    assert not load.failures, load.summary()
