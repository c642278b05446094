"""Redeploying the iris example while traffic flows: no client request may fail.

``serve.run`` of the same application name first with a new version of the Bento, then
with a new ``num_replicas`` for the API server (up, then down: Ray only reconfigures).
For a new version Ray replaces every replica. The runner has two: Ray replaces them one
at a time (a fifth of the replicas, at least one), and the other keeps serving. The API
server has one: Ray drains and stops it before the new one runs, and Ray's proxy holds
the requests of that gap until it does, so clients see a pause, not an error. The figures
(and the longest request, the pause) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _load import Load, replica_actor_names
from _support import EXAMPLES, build_bento

import bentoml_ray

pytestmark = pytest.mark.usefixtures("serve_url")

APP = "redeploy-iris"
CONNECTIONS = 4
#: Each client's pause between requests: at most 80 requests/s, about half of what the
#: example serves here, so that new replicas start in seconds, not half a minute, while
#: requests still arrive throughout.
PAUSE_S = 0.05
#: Answers to wait for between steps, so that each step runs under load.
BETWEEN = 50


def _is_virginica(response: httpx.Response) -> bool:
    return bool(response.json() == [2])


def _step(load: Load, what: str, redeploy: Callable[[], Any]) -> None:
    start = time.monotonic()
    redeploy()
    took = time.monotonic() - start
    load.wait_for(len(load.outcomes) + BETWEEN)
    longest = max(outcome.end - outcome.start for outcome in load.outcomes)
    print(
        f"\n[redeploy] {what}: serve.run took {took:.1f} s; so far {load.summary()}, "
        f"the longest request {longest:.1f} s"
    )


def _wait_gone(replicas: list[str], bound_s: float = 120.0) -> None:
    """The old version's replicas stop (they drain first, so this is bounded, not instant)."""
    deadline = time.monotonic() + bound_s
    while set(replicas) & set(replica_actor_names(APP, "iris_classifier")):
        assert time.monotonic() < deadline, "the old version's replicas are still there"
        time.sleep(0.2)


def test_redeploying_under_load_fails_no_request(serve_url: str, iris_bento: str) -> None:
    from ray import serve

    def run(tag: str, replicas: int) -> None:
        app = bentoml_ray.deployment(
            tag, {"num_replicas": replicas}, {"iris_clf": {"num_replicas": 2}}
        )
        serve.run(app, name=APP, route_prefix=f"/{APP}")

    new_version = build_bento(EXAMPLES / "iris_classifier")
    assert new_version != iris_bento
    run(iris_bento, 1)
    try:
        url = f"{serve_url}/{APP}/classify"
        body = [[5.9, 3.0, 5.1, 1.8]]
        with Load(url, body, CONNECTIONS, check=_is_virginica, pause_s=PAUSE_S) as load:
            load.wait_for(BETWEEN)
            old_replicas = replica_actor_names(APP, "iris_classifier")
            _step(load, f"new Bento version {new_version}", lambda: run(new_version, 1))
            _wait_gone(old_replicas)
            _step(load, "num_replicas 1 -> 2", lambda: run(new_version, 2))
            assert len(replica_actor_names(APP, "iris_classifier")) == 2
            _step(load, "num_replicas 2 -> 1", lambda: run(new_version, 1))
    finally:
        serve.delete(APP)
    assert not load.failures, load.summary()
