"""Property tests over ``deployment()``'s arguments, for both kinds of Bento.

Whatever a user passes, ``deployment()`` either raises a ``BentoRayError`` whose message
quotes something specific the user gave (a key or a value inside an argument, or an
argument that is not a dict together with its type: ``_checks.names_what_was_given``), or
returns an application that deploys and answers. A failure never leaves anything
deployed. Checking needs no Ray, so the validation property runs many examples; deploying
is slow, so only a few deploy. Both are derandomized: the same examples every run.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from _checks import names_what_was_given
from _support import wait_for_deletions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray.serve import Application

import bentoml_ray
from bentoml_ray import BentoRayError

#: Options Ray's serve.deployment takes (a sample), bentoml-ray's own, and near misses.
OPTION_NAMES = [
    "num_replicas", "max_ongoing_requests", "max_queued_requests", "ray_actor_options",
    "autoscaling_config", "name", "max_replicas_per_node", "graceful_shutdown_timeout_s",
    "health_check_period_s", "health_check_timeout_s", "user_config", "route_prefix",
    "placement_group_bundles", "max_retries", "num_replica", "replicas", "", "ray_actor_option",
]  # fmt: skip

ACTOR_OPTION_NAMES = ["num_cpus", "num_gpus", "memory", "runtime_env", "resources", "cpus"]

BATCH_OPTION_NAMES = [
    "max_batch_size", "batch_wait_timeout_s", "max_concurrent_batches", "batch_size", "",
]  # fmt: skip

#: Runner / service names of the two example Bentos, and strangers.
COMPONENT_NAMES = ["iris_clf", "Preprocessor", "ReviewScorer", "iris", "preprocessor", ""]
METHOD_NAMES = ["predict", "normalize", "tokens", "score", "predict_proba", ""]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "/", "/p", "p", "/a/{b}", "1", "", "/x?y"]),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from([*ACTOR_OPTION_NAMES, "min_replicas"]), inner, max_size=3),
    ),
    max_leaves=6,
)


def _options(names: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(names), values, max_size=4),
        values,  # not even a dict
    )


batching = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(COMPONENT_NAMES),
        st.one_of(
            st.dictionaries(
                st.sampled_from(METHOD_NAMES), _options(BATCH_OPTION_NAMES), max_size=2
            ),
            values,
        ),
        max_size=2,
    ),
    values,
)
arguments = st.fixed_dictionaries(
    {
        "service_deployment_config": _options(OPTION_NAMES),
        "runner_deployment_config": st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(COMPONENT_NAMES), _options(OPTION_NAMES), max_size=2),
            values,
        ),
        "enable_batching": st.one_of(st.none(), st.booleans(), scalars),
        "batching_config": batching,
    }
)


def _check(target: str, kwargs: dict[str, Any]) -> Application | None:
    """``deployment(target, **kwargs)``: an application, or None after a clear error."""
    try:
        return bentoml_ray.deployment(target, **kwargs)
    except BentoRayError as exc:
        message = str(exc)
        assert names_what_was_given(message, kwargs), f"{message!r} names none of {kwargs}"
        return None


FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("bento", ["iris", "review"])
def test_any_arguments_either_raise_a_clear_error_or_give_an_application(
    bento: str, iris_bento: str, review_scorer_bento: str
) -> None:
    """No Ray needed: each example is checked only."""
    target = iris_bento if bento == "iris" else review_scorer_bento
    outcomes = {"raised": 0, "built": 0}

    @settings(FUZZ, max_examples=150)
    @given(kwargs=arguments)
    def check(kwargs: dict[str, Any]) -> None:
        outcomes["built" if _check(target, kwargs) is not None else "raised"] += 1

    check()
    print(f"\n{bento}: {outcomes}")
    assert outcomes["raised"] > 0


#: Arguments that stay within what one test machine can run, valid or not.
small_options = st.fixed_dictionaries(
    {},
    optional={
        "num_replicas": st.sampled_from([1, 2, 0, "auto", "1"]),
        "max_ongoing_requests": st.sampled_from([1, 8, 100, 0, -1, 2.5]),
        "ray_actor_options": st.sampled_from(
            [{"num_cpus": 0.1}, {"num_cpus": 0}, {"num_cpus": -1}, {"cpus": 1}, "1"]
        ),
        "graceful_shutdown_timeout_s": st.sampled_from([0, 1, -5, math.nan]),
        "route_prefix": st.sampled_from(["/", "/fz", "fz", "/a/{b}"]),
    },
)
deployable_arguments = st.fixed_dictionaries(
    {
        "service_deployment_config": st.one_of(st.none(), small_options),
        "runner_deployment_config": st.one_of(
            st.none(), st.dictionaries(st.sampled_from(COMPONENT_NAMES), small_options, max_size=1)
        ),
        "enable_batching": st.sampled_from([None, True, False]),
    }
)


@pytest.mark.parametrize("bento", ["iris", "review"])
def test_arguments_that_pass_the_checks_deploy_and_failures_deploy_nothing(
    serve_url: str, bento: str, iris_bento: str, review_scorer_bento: str
) -> None:
    from ray import serve

    target = iris_bento if bento == "iris" else review_scorer_bento
    request = (
        ("classify", [[5.1, 3.5, 1.4, 0.2]], [0])
        if bento == "iris"
        else ("score", {"reviews": ["great"]}, [2.0])
    )
    outcomes = {"raised": 0, "deployed": 0}
    wait_for_deletions()  # the applications listed before and after each call stay put

    @settings(FUZZ, max_examples=4)
    @given(kwargs=deployable_arguments)
    def deploy(kwargs: dict[str, Any]) -> None:
        before = set(serve.status().applications)
        app = _check(target, kwargs)
        if app is None:
            assert set(serve.status().applications) == before, "a failed call deployed something"
            outcomes["raised"] += 1
            return
        name = f"config_fuzz_{bento}"
        options = kwargs["service_deployment_config"] or {}
        prefix = options.get("route_prefix", "/").rstrip("/")
        serve.run(app, name=name, route_prefix=f"/{name}")
        try:
            api, body, expected = request
            url = f"{serve_url}/{name}{prefix}/{api}"
            response = httpx.post(url, json=body, timeout=60)
            assert response.status_code == 200 and response.json() == expected, response.text
        finally:
            serve.delete(name)
        outcomes["deployed"] += 1

    deploy()
    print(f"\n{bento}: {outcomes}")
    assert outcomes["deployed"] > 0
