"""Killing a replica in the middle of load: what do clients see?

The callees are slow (0.2 s a runner call, 1 s a dependency call), so when a test
``ray.kill``s a replica (no graceful shutdown, as a crash) calls are surely running in it.
Each test kills once and counts what its clients saw:

- A runner or dependency-service replica (one of two): its running calls fail with
  ``ActorDiedError`` in the caller, which sends them again to the other replica
  (``_replica.calls``): no client sees an error, for plain and streaming calls. The other
  replica serves on; the runner test also sees its replacement serve (the dependency test
  does not wait for it: the same replacement path). With ``max_retries: 0`` the running
  calls fail.
- An ingress (API-server / root service) replica, of both kinds of Bento at once: Ray's
  proxy routes new requests around it, but the requests it was running are lost with it
  (a 500 from the proxy): that hop is the client's, and Ray's default proxy does not retry
  it. Only those are lost, within ``FAIL_FAST_S`` of the kill, and once the replacement
  runs every request is answered. On Ray 2.47 this also shows the replicas' shorter wait
  on a dead caller (``_ray_compat.replica_env_vars``): with Ray's 60 s, the callees of the
  killed replica stalled, and 42 of 152 requests failed, some after 60 s.

Figures (failed requests, time until a replacement replica runs where a test waits for
it, the slowest request) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from _load import (
    Load,
    Outcome,
    is_replaced,
    kill_replica,
    replica_actor_names,
    wait_replaced,
)
from _support import deployed

import bentoml_ray

pytestmark = pytest.mark.usefixtures("serve_url")

CONNECTIONS = 16
#: Answers to wait for before the kill, and after it.
WARM_UP, AFTER = 40, 40
#: Every request lost with a killed ingress replica has failed this soon after the kill.
FAIL_FAST_S = 10.0
#: Bound on a replica's replacement (a loaded 2-core machine starts Python slowly).
REPLACE_BOUND_S = 180.0
#: Small replicas (three apps fit the session's logical CPUs), a short graceful shutdown
#: (deleting an app whose callee was killed need not wait out 20 s), and Ray's health check
#: every second rather than 10, so a killed replica is seen and replaced sooner.
SMALL = {
    "ray_actor_options": {"num_cpus": 0.25},
    "graceful_shutdown_timeout_s": 1,
    "health_check_period_s": 1,
}


def _kill(app: str, deployment: str, replicas: int = 2) -> tuple[list[str], float]:
    """Kill the first of ``deployment``'s replicas; the replicas it had, and when."""
    victims = replica_actor_names(app, deployment)
    assert len(victims) == replicas, victims
    kill_replica(victims[0])
    return victims, time.monotonic()


def _report(what: str, load: Load, killed_at: float, replaced_s: float | None = None) -> None:
    hit = [o for o in load.outcomes if o.start <= killed_at <= o.end]
    slowest = max((o.end - o.start for o in hit), default=0.0)
    replaced = "" if replaced_s is None else f"replacement running after {replaced_s:.1f} s; "
    ended = sorted(o.end - killed_at for o in load.failures)
    when = f"; failures ended {ended[0]:.1f} to {ended[-1]:.1f} s after the kill" if ended else ""
    print(
        f"\n[faults] kill {what}: {load.summary()}; {replaced}"
        f"{len(hit)} requests in flight at the kill, slowest of them {slowest:.2f} s{when}"
    )


def _is_work(response: httpx.Response) -> bool:
    return bool(response.json()["x"] == 7)


def _is_count(response: httpx.Response) -> bool:
    return response.text == "0\n1\n2\n"


def _runner_app(tag: str) -> Any:
    return bentoml_ray.deployment(
        tag, {"num_replicas": 2, **SMALL}, {"slow": {"num_replicas": 2, **SMALL}}
    )


def _probe_app(tag: str, worker_options: dict[str, Any] | None = None) -> Any:
    workers = {"num_replicas": 2, **SMALL, **(worker_options or {})}
    return bentoml_ray.deployment(tag, {"num_replicas": 2, **SMALL}, {"Worker": workers})


@pytest.fixture(scope="module")
def runner_app(serve_url: str, fault_runner_bento: str) -> Iterator[str]:
    """The runner-based fixture, two replicas of each deployment; its URL prefix."""
    app = "faults-runner"
    with deployed(_runner_app(fault_runner_bento), app, route_prefix=f"/{app}"):
        yield app


@pytest.fixture(scope="module")
def probe_app(serve_url: str, fault_probe_bento: str) -> Iterator[str]:
    """The 1.2+ fixture, two replicas of each service; its URL prefix."""
    app = "faults-probe"
    with deployed(_probe_app(fault_probe_bento), app, route_prefix=f"/{app}"):
        yield app


def _after(load: Load, count: int) -> Callable[[], bool]:
    """``count`` more answers than ``load`` has now."""
    target = len(load.outcomes) + count
    return lambda: len(load.outcomes) >= target


@pytest.mark.compat
@pytest.mark.ray_behaviour  # a dead actor, and our retries of its calls
def test_killing_a_runner_replica_loses_no_request(serve_url: str, runner_app: str) -> None:
    url, runner = f"{serve_url}/{runner_app}/work", "fault_runner.runner.slow"
    with Load(url, {"x": 7}, CONNECTIONS, check=_is_work) as load:
        load.wait_for(WARM_UP)
        victims, killed_at = _kill(runner_app, runner)
        load.wait_until(_after(load, AFTER), 120, f"{AFTER} answers after the kill")
        # The replacement loads the Bento and takes calls like the others.
        wait_replaced(runner_app, runner, victims, REPLACE_BOUND_S)
        replaced_s = time.monotonic() - killed_at  # at most: it may have run before the wait
        load.wait_until(_after(load, AFTER), 120, f"{AFTER} answers after the replacement")
    _report("a runner replica", load, killed_at, replaced_s)
    assert [o for o in load.outcomes if o.start <= killed_at <= o.end], "nothing ran at the kill"
    assert not load.failures, load.summary()


def test_killing_a_dependency_replica_loses_no_call_or_stream(
    serve_url: str, probe_app: str
) -> None:
    """Plain calls and streams under load together, one kill of a ``Worker`` replica."""
    base = f"{serve_url}/{probe_app}"
    with (
        Load(f"{base}/work", {"x": 7}, CONNECTIONS // 2, check=_is_work) as calls,
        Load(f"{base}/count", {"n": 3}, CONNECTIONS // 2, check=_is_count) as streams,
    ):
        calls.wait_for(WARM_UP // 2)
        streams.wait_for(WARM_UP // 2)
        _, killed_at = _kill(probe_app, "Worker")
        for load in (calls, streams):
            load.wait_until(_after(load, AFTER // 2), 120, "answers after the kill")
    _report("a dependency replica (calls)", calls, killed_at)
    _report("a dependency replica (streams)", streams, killed_at)
    assert not calls.failures, calls.summary()
    # A stream is retried only until its first chunk reached the caller: a replica that
    # dies between chunks cuts the response short (its chunks go out in one burst here).
    cut_short = [f for f in streams.failures if f.status == 599 and f.detail.startswith("0\n")]
    assert len(streams.failures) == len(cut_short), streams.summary()


def test_without_retries_the_killed_replicas_calls_fail(
    serve_url: str, fault_probe_bento: str
) -> None:
    """``max_retries: 0`` opts out, which shows that the retries are what saved them.

    One ``Worker`` replica here, so every running call is in the one that dies (with two,
    Ray's router does not always spread 16 connections over both). The test is done once
    the failures are counted: the requests still waiting for a replacement are abandoned.
    """
    app = "faults-no-retries"
    workers = {"max_retries": 0, "num_replicas": 1}
    with deployed(_probe_app(fault_probe_bento, workers), app, route_prefix=f"/{app}"):
        url = f"{serve_url}/{app}/work"
        with Load(url, {"x": 7}, CONNECTIONS, check=_is_work, abandon=True) as load:
            load.wait_for(WARM_UP)
            _, killed_at = _kill(app, "Worker", replicas=1)
            load.wait_until(lambda: bool(load.failures), 60, "failed request")
    _report("the only dependency replica, max_retries 0", load, killed_at)
    assert load.failures, load.summary()
    assert all(failure.status == 500 for failure in load.failures), load.summary()


@pytest.mark.compat
@pytest.mark.ray_behaviour  # Ray's proxy, and how Ray's workers treat a caller that died
def test_killing_an_ingress_replica_loses_only_its_running_requests(
    serve_url: str, runner_app: str, probe_app: str
) -> None:
    """One ingress replica of each kind of Bento killed at once, each under its own load."""
    ingresses = {"runner-based": (runner_app, "fault_runner"), "1.2+": (probe_app, "Front")}
    with ExitStack() as stack:
        loads = {
            kind: stack.enter_context(
                Load(f"{serve_url}/{app}/work", {"x": 7}, CONNECTIONS, check=_is_work)
            )
            for kind, (app, _) in ingresses.items()
        }
        for load in loads.values():
            load.wait_for(WARM_UP)
        killed = {kind: _kill(app, deployment) for kind, (app, deployment) in ingresses.items()}
        replaced_at: dict[str, float] = {}
        while len(replaced_at) < len(ingresses):  # each noted as soon as it runs (bounded)
            for kind, (app, deployment) in ingresses.items():
                if kind not in replaced_at and is_replaced(app, deployment, killed[kind][0]):
                    replaced_at[kind] = time.monotonic()
            waited = time.monotonic() - min(at for _, at in killed.values())
            assert waited < REPLACE_BOUND_S, f"not replaced in {REPLACE_BOUND_S:.0f} s: {killed}"
            time.sleep(0.1)
        replaced_s = {kind: replaced_at[kind] - killed[kind][1] for kind in ingresses}
        for load in loads.values():
            load.wait_until(_after(load, AFTER), 120, f"{AFTER} answers after the replacement")

    for kind, load in loads.items():
        _report(f"an ingress replica ({kind})", load, killed[kind][1], replaced_s[kind])
        failures: list[Outcome] = load.failures
        # At most the requests that were running in the killed replica: one per connection,
        # each answered 500 by Ray's proxy, or its connection closed (status 0), soon.
        assert len(failures) <= CONNECTIONS, (kind, load.summary())
        assert all(failure.status in (500, 0) for failure in failures), (kind, load.summary())
        late = [f.end - killed[kind][1] for f in failures if f.end - killed[kind][1] > FAIL_FAST_S]
        assert not late, (kind, f"failed {late} s after the kill", load.summary())
        # Once the replacement runs, every request is answered.
        assert not [f for f in failures if f.start > replaced_at[kind]], (kind, load.summary())
