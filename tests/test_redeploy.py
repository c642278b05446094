"""Redeploying the iris example while traffic flows: no client request may fail.

``serve.run`` of the same application name first with a new ``num_replicas`` (up, then
down: Ray only reconfigures) and then with a new version of the Bento (Ray replaces every
replica, starting new ones before it stops the old). Ray's rolling update drains a
replica before stopping it and the proxy routes only to running ones, so the clients
should see nothing. The figures are printed; run with ``-s`` to see them.
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
CONNECTIONS = 16
#: Answers to wait for between steps, so that each step runs under load.
BETWEEN = 50


def _is_virginica(response: httpx.Response) -> bool:
    return bool(response.json() == [2])


def _step(load: Load, what: str, redeploy: Callable[[], Any]) -> None:
    start = time.monotonic()
    redeploy()
    took = time.monotonic() - start
    load.wait_for(len(load.outcomes) + BETWEEN)
    print(f"\n[redeploy] {what}: serve.run took {took:.1f} s; so far {load.summary()}")


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
            tag, {"num_replicas": replicas}, {"iris_clf": {"num_replicas": replicas}}
        )
        serve.run(app, name=APP, route_prefix=f"/{APP}")

    new_version = build_bento(EXAMPLES / "iris_classifier")
    assert new_version != iris_bento
    run(iris_bento, 1)
    try:
        url = f"{serve_url}/{APP}/classify"
        with Load(url, [[5.9, 3.0, 5.1, 1.8]], CONNECTIONS, check=_is_virginica) as load:
            load.wait_for(BETWEEN)
            _step(load, "num_replicas 1 -> 2", lambda: run(iris_bento, 2))
            assert len(replica_actor_names(APP, "iris_classifier")) == 2
            old_replicas = replica_actor_names(APP, "iris_classifier")
            _step(load, f"new Bento version {new_version}", lambda: run(new_version, 2))
            _wait_gone(old_replicas)
            _step(load, "num_replicas 2 -> 1", lambda: run(new_version, 1))
    finally:
        serve.delete(APP)
    assert not load.failures, load.summary()
