"""New Bento versions under load (an upgrade, a version that cannot load, a rollback; a
runner-based Bento's upgrade), and a dependency's first call from zero replicas.

``serve.run`` of the same application name with another version, while clients send
requests. With ``deployment()``'s defaults (one replica per deployment), on a Ray with
``max_surge_percent`` (2.60+): no request fails, no answer combines a root of one version
with a dependency of another, and a version whose dependency cannot load leaves the
previous one serving, whole (``_replica.versions``). On older Rays, versions still never
mix; what else they do is in README's "Upgrading a Bento". Figures in both Ray modes:
``benchmarks/rollout.py``. Run with ``-s`` to see this test's.
"""

from __future__ import annotations

import time

import httpx
import pytest
from _load import Load, replica_actor_names
from _support import delete_in_background
from ray import serve

import bentoml_ray
from bentoml_ray._ray_compat import RAY_DEPLOYMENT_OPTIONS

pytestmark = pytest.mark.usefixtures("serve_url")

#: Ray keeps old replicas until new ones are ready only where it takes this option.
SURGES = "max_surge_percent" in RAY_DEPLOYMENT_OPTIONS
CLIENTS = 4
#: Answers to wait for around each step, so that it runs under load.
AROUND = 15


def _same_versions(response: httpx.Response) -> bool:
    body = response.json()
    return bool(body["front"] == body["back"])


def _same_runner_versions(response: httpx.Response) -> bool:
    body = response.json()
    return bool(body["api"] == body["runner"])


def _replicas(app: str, deployments: tuple[str, ...]) -> set[str]:
    return {name for d in deployments for name in replica_actor_names(app, d)}


def _wait_settled(app: str, deployments: tuple[str, ...]) -> None:
    """Wait until no replica of ``deployments`` is starting.

    Ray counts a start that fails against the deployment's current target, whatever version
    the replica runs: a broken version's root replica that fails only after the next deploy
    call would use up that version's ``max_constructor_retry_count``.
    """
    deadline = time.monotonic() + 60
    while True:
        states = serve.status().applications[app].deployments
        if not any(states[d].replica_states.get("STARTING") for d in deployments):
            return
        assert time.monotonic() < deadline, f"replicas still starting: {states}"
        time.sleep(0.2)


def _wait_gone(app: str, deployments: tuple[str, ...], old: set[str]) -> None:
    deadline = time.monotonic() + 120  # old replicas drain before they stop
    while old & _replicas(app, deployments):
        assert time.monotonic() < deadline, "the old version's replicas are still there"
        time.sleep(0.2)


@pytest.mark.compat
@pytest.mark.ray_behaviour
def test_versions_never_mix_through_an_upgrade_a_broken_version_and_a_rollback(
    serve_url: str, versioned_bento: str, versioned_v2_bento: str, versioned_broken_bento: str
) -> None:
    app, deployments = "rollout", ("Front", "Back")
    url = f"{serve_url}/{app}/versions"
    # A broken version fails at its first failed start, where Ray lets it say so (2.50+).
    fail_fast = (
        {"max_constructor_retry_count": 1}
        if "max_constructor_retry_count" in RAY_DEPLOYMENT_OPTIONS
        else {}
    )

    def run(tag: str) -> float:
        start = time.monotonic()
        serve.run(
            bentoml_ray.deployment(tag, fail_fast, {"Back": fail_fast}),
            name=app,
            route_prefix=f"/{app}",
        )
        return time.monotonic() - start

    def answer() -> dict[str, str]:
        """The application's answer; on a Ray without surge, once it answers again."""
        deadline = time.monotonic() + (0 if SURGES else 90)
        while True:
            try:
                response = httpx.post(url, json={}, timeout=30)
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
        assert response.status_code == 200, response.text
        return dict(response.json())

    run(versioned_bento)
    try:
        with Load(url, {}, CLIENTS, check=_same_versions) as load:
            load.wait_for(AROUND)
            old = _replicas(app, deployments)
            took = {"upgrade": run(versioned_v2_bento)}
            _wait_gone(app, deployments, old)
            assert answer() == {"front": "2", "back": "2"}
            load.wait_for(len(load.outcomes) + AROUND)

            start = time.monotonic()
            with pytest.raises(RuntimeError) as raised:
                run(versioned_broken_bento)  # without surge, the application is down until...
            took["broken"] = time.monotonic() - start
            assert "'Back'" in str(raised.value)  # Ray names the deployment; its status, why
            back = serve.status().applications[app].deployments["Back"].message
            assert "Back cannot load its model" in back, back
            if SURGES:  # the old version, whole, answered throughout
                assert answer() == {"front": "2", "back": "2"}
                load.wait_for(len(load.outcomes) + AROUND)

            _wait_settled(app, deployments)  # the broken root's own failed start, too
            old = _replicas(app, deployments)
            took["rollback"] = run(versioned_bento)  # ... a working version is deployed
            _wait_gone(app, deployments, old)
            assert answer() == {"front": "1", "back": "1"}
            load.wait_for(len(load.outcomes) + AROUND)
    finally:
        delete_in_background(app, f"/{app}")
    longest = max(outcome.end - outcome.start for outcome in load.outcomes)
    print(
        f"\n[rollout] deploy calls {', '.join(f'{k} {v:.1f} s' for k, v in took.items())}; "
        f"{load.summary()}; the longest request {longest:.1f} s"
    )
    mixed = [o for o in load.outcomes if o.status == 599]
    assert not mixed, f"{len(mixed)} answers combined versions: {mixed[:3]}"
    if SURGES:  # an older Ray stops old replicas first: requests wait, some fail (README)
        assert not load.failures, load.summary()
        assert longest < 5.0, f"a request waited {longest:.1f} s"


@pytest.mark.skipif(not SURGES, reason="this Ray stops old replicas first (README)")
def test_a_runner_based_bento_upgrades_with_no_request_lost_or_mixed(
    serve_url: str, versioned_runner_bento: str, versioned_runner_v2_bento: str
) -> None:
    """The same mechanism for a runner-based Bento: the API server calls its runner over a
    handle, and each answer names the version of both."""
    app, deployments = "rollout-runner", ("versioned_runner", "versioned_runner.runner.tagger")
    url = f"{serve_url}/{app}/versions"
    serve.run(bentoml_ray.deployment(versioned_runner_bento), name=app, route_prefix=f"/{app}")
    try:
        with Load(url, {}, CLIENTS, check=_same_runner_versions) as load:
            load.wait_for(AROUND)
            old = _replicas(app, deployments)
            took = time.monotonic()
            serve.run(
                bentoml_ray.deployment(versioned_runner_v2_bento), name=app, route_prefix=f"/{app}"
            )
            took = time.monotonic() - took
            _wait_gone(app, deployments, old)
            load.wait_for(len(load.outcomes) + AROUND)
        assert httpx.post(url, json={}, timeout=30).json() == {"api": "2", "runner": "2"}
    finally:
        delete_in_background(app, f"/{app}")
    longest = max(outcome.end - outcome.start for outcome in load.outcomes)
    print(f"\n[rollout, runner-based] deploy call {took:.1f} s; {load.summary()}; "
          f"the longest request {longest:.1f} s")  # fmt: skip
    assert not [o for o in load.outcomes if o.status == 599], load.summary()  # mixed
    assert not load.failures, load.summary()
    assert longest < 5.0, f"a request waited {longest:.1f} s"


def test_a_dependency_at_zero_replicas_answers_its_first_call(
    serve_url: str, versioned_bento: str
) -> None:
    """From zero replicas, the first call waits for ``Back`` to start (longer than its
    2 s ``traffic.timeout``, which counts from when a replica takes the call) and answers.

    ``Front`` starts from zero too, so it wakes ``Back`` as it starts (``wake_callees``),
    before its own 1 s load."""
    app = "from_zero"
    zero = {
        "autoscaling_config": {
            "min_replicas": 0,
            "initial_replicas": 0,
            "max_replicas": 1,
            "upscale_delay_s": 0,
            "look_back_period_s": 15,  # longer than the handles' 10 s metrics push
        }
    }
    serve.run(bentoml_ray.deployment(versioned_bento, zero, {"Back": zero}), name=app,
              route_prefix=f"/{app}")  # fmt: skip
    try:
        assert not replica_actor_names(app, "Back") and not replica_actor_names(app, "Front")
        start = time.monotonic()
        response = httpx.post(f"{serve_url}/{app}/versions", json={}, timeout=60)
        took = time.monotonic() - start
        assert response.status_code == 200, response.text
        assert response.json() == {"front": "1", "back": "1"}
        assert took > 2.0, f"answered in {took:.1f} s: was Back at zero replicas?"
        print(f"\n[from zero] the first request, through Back, answered in {took:.1f} s")
    finally:
        delete_in_background(app, f"/{app}")
