"""Every bad argument of deployment() raises before anything deploys, naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import bentoml
import pytest
from _support import EXAMPLES, ROOT
from ray.serve import Application

import bentoml_ray
from bentoml_ray import (
    BentoNotFound,
    BentoRayError,
    InvalidArgument,
    InvalidBentoTag,
    InvalidDeploymentConfig,
)


def _raises(match: str, target: str, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidDeploymentConfig, match=match) as info:
        bentoml_ray.deployment(target, *args, **kwargs)
    return str(info.value)


def test_unknown_api_server_option_names_it_and_lists_the_allowed(iris_bento: str) -> None:
    message = _raises("Unknown option 'num_replica'", iris_bento, {"num_replica": 2})
    assert "Did you mean 'num_replicas'?" in message
    assert "max_ongoing_requests" in message and "route_prefix" in message


def test_unknown_runner_option(iris_bento: str) -> None:
    message = _raises(
        "Unknown option 'cpus' for runner 'iris_clf'", iris_bento, None, {"iris_clf": {"cpus": 2}}
    )
    assert "ray_actor_options" in message
    assert "route_prefix" not in message, "route_prefix belongs to the API server only"


def test_unknown_runner_name_lists_the_runners(iris_bento: str) -> None:
    message = _raises("names runner 'iris'", iris_bento, None, {"iris": {"num_replicas": 1}})
    assert "Runners: iris_clf" in message


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_replicas": 0}, "num_replicas .* >= 1"),
        ({"num_replicas": -1}, "num_replicas .* >= 1"),
        ({"num_replicas": "two"}, "num_replicas"),
        ({"num_replicas": True}, "num_replicas"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
        ({"ray_actor_options": "cpu=1"}, "ray_actor_options .* must be a dict"),
        ({"num_replicas": 2, "autoscaling_config": {"min_replicas": 1}}, "both num_replicas"),
        ({"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}}, "Ray rejects"),
        ({"route_prefix": "classify"}, "route_prefix must be a string starting with '/'"),
        ({"route_prefix": "/{name}"}, "route_prefix"),
    ],
)
def test_invalid_values(iris_bento: str, options: dict[str, Any], match: str) -> None:
    _raises(match, iris_bento, options)


def test_invalid_runner_values_name_the_runner(iris_bento: str) -> None:
    _raises(
        "num_replicas of runner 'iris_clf'", iris_bento, None, {"iris_clf": {"num_replicas": 0}}
    )


def test_embedded_runner_options(probe_bento: str) -> None:
    """An embedded runner has no deployment: scaling options for it are refused, by name."""
    message = _raises(
        "runner 'large_batches' is embedded", probe_bento, None,
        {"large_batches": {"num_replicas": 2, "max_retries": 1}},
    )  # fmt: skip
    assert "'max_retries', 'num_replicas' cannot apply" in message
    assert "service_deployment_config" in message and "embedded: false" in message
    message = _raises("embedded of runner 'small_batches' must be true", probe_bento, None,
                      {"small_batches": {"embedded": "yes"}})  # fmt: skip
    assert "(here: false)" in message
    # Both directions are allowed: out of the API server, and into it.
    bentoml_ray.deployment(
        probe_bento, None, {"large_batches": {"embedded": False, "num_replicas": 2}}
    )
    bentoml_ray.deployment(probe_bento, None, {"small_batches": {"embedded": True}})


def test_runner_placement(probe_bento: str) -> None:
    """``placement`` is for every runner, embedded or not; a wrong one names the three."""
    message = _raises("placement of runner 'small_batches' must be 'inline'", probe_bento,
                      None, {"small_batches": {"placement": "threads"}})  # fmt: skip
    assert "'thread'" in message and "'auto'" in message and "unset, 'auto'" in message
    bentoml_ray.deployment(probe_bento, None, {"large_batches": {"placement": "inline"}})
    bentoml_ray.deployment(
        probe_bento, None, {"small_batches": {"placement": "thread", "embedded": True}}
    )


def test_options_must_be_dicts(iris_bento: str) -> None:
    _raises("must be a dict", iris_bento, ["num_replicas", 2])
    _raises("runner_deployment_config must be a dict", iris_bento, None, "iris_clf")


def test_duplicate_deployment_names(iris_bento: str) -> None:
    _raises(
        "would both be named 'same'", iris_bento, {"name": "same"}, {"iris_clf": {"name": "same"}}
    )


def test_batching_config_unknown_runner(probe_bento: str) -> None:
    message = _raises(
        "names runner 'tiny_batches'",
        probe_bento,
        enable_batching=True,
        batching_config={"tiny_batches": {}},
    )
    assert "large_batches" in message and "small_batches" in message


def test_batching_config_unknown_method(probe_bento: str) -> None:
    message = _raises(
        "does not have",
        probe_bento,
        enable_batching=True,
        batching_config={"small_batches": {"predict": {"max_batch_size": 4}}},
    )
    assert "ndarray_batch" in message


def test_batching_config_non_batchable_method(probe_bento: str) -> None:
    _raises(
        "'describe'.*not batchable",
        probe_bento,
        enable_batching=True,
        batching_config={"small_batches": {"describe": {"max_batch_size": 4}}},
    )


def test_unknown_batching_option(probe_bento: str) -> None:
    message = _raises(
        "Unknown batching option 'max_batch'",
        probe_bento,
        enable_batching=True,
        batching_config={"small_batches": {"ndarray_batch": {"max_batch": 4}}},
    )
    assert "Did you mean 'max_batch_size'?" in message and "batch_wait_timeout_s" in message


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_batch_size": 0}, "max_batch_size .* >= 1"),
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"batch_wait_timeout_s": -0.1}, "batch_wait_timeout_s .* >= 0"),
        ({"batch_wait_timeout_s": float("nan")}, "batch_wait_timeout_s"),
        ({"max_concurrent_batches": 0}, "max_concurrent_batches"),
        ({"batch_size_fn": 3}, "batch_size_fn"),
    ],
)
def test_invalid_batching_values(probe_bento: str, options: dict[str, Any], match: str) -> None:
    _raises(
        match,
        probe_bento,
        enable_batching=True,
        batching_config={"small_batches": {"ndarray_batch": options}},
    )


def test_batching_config_without_enable_batching(probe_bento: str) -> None:
    _raises(
        "enable_batching is False",
        probe_bento,
        batching_config={"small_batches": {"ndarray_batch": {"max_batch_size": 4}}},
    )


def test_tag_not_in_store_names_the_tag_and_the_store(iris_bento: str, bentoml_home: str) -> None:
    with pytest.raises(BentoNotFound) as info:
        bentoml_ray.deployment("iris_classifier:doesnotexist")
    assert "iris_classifier:doesnotexist" in str(info.value)
    assert bentoml_home in str(info.value)
    with pytest.raises(BentoNotFound, match="no_such_bento"):
        bentoml_ray.deployment("no_such_bento:latest")
    # As BentoML's original raised it: `except bentoml.exceptions.NotFound` catches it.
    with pytest.raises(bentoml.exceptions.NotFound) as original:
        bentoml_ray.deployment("no_such_bento:latest")
    assert isinstance(original.value, BentoNotFound) and isinstance(original.value, LookupError)
    assert not isinstance(original.value, InvalidArgument)


@pytest.mark.parametrize("tag", ["Not A Tag!", "a:b:c", "x" * 70, "name:"])
def test_a_malformed_tag_is_a_bad_argument(tag: str) -> None:
    with pytest.raises(InvalidBentoTag, match="not a valid Bento tag") as info:
        bentoml_ray.deployment(tag)
    assert "name[:version]" in str(info.value)
    assert isinstance(info.value, InvalidArgument) and isinstance(info.value, ValueError)
    # Earlier releases raised BentoNotFound for it; `except BentoNotFound` still catches it.
    assert isinstance(info.value, BentoNotFound)


def test_the_old_names_are_the_new_classes() -> None:
    assert InvalidDeploymentConfig is InvalidArgument
    for name in bentoml_ray.__all__:
        value = getattr(bentoml_ray, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, BentoRayError), name


def test_wrong_target_type() -> None:
    with pytest.raises(InvalidDeploymentConfig, match="Bento tag"):
        bentoml_ray.deployment(42)


def test_both_names_for_runner_options(iris_bento: str) -> None:
    _raises("not both", iris_bento, None, {}, runners_deployment_config_map={})


def test_every_target_form_and_the_old_keyword(iris_bento: str) -> None:
    bento = bentoml.get(iris_bento)
    from_import = bentoml.load(
        "service:svc", working_dir=str(EXAMPLES / "iris_classifier"), reload=True
    )
    for target in (iris_bento, bento.tag, bento, bentoml.load(iris_bento), from_import):
        assert isinstance(bentoml_ray.deployment(target), Application)
    app = bentoml_ray.deployment(
        iris_bento, runners_deployment_config_map={"iris_clf": {"num_replicas": 2}}
    )
    assert isinstance(app, Application)
    # The old keyword has the new one's effect; ignored, the runner would keep Ray's default.
    # (``deployment()`` hands it to ``plan_layout``: ``test_both_names_for_runner_options``.)
    runner = "iris_classifier.runner.iris_clf"
    old = _num_replicas(iris_bento, runners_deployment_config_map={"iris_clf": {"num_replicas": 2}})
    assert old[runner] == 2
    assert _num_replicas(iris_bento)[runner] == 1
    assert (
        _num_replicas(iris_bento, runner_deployment_config={"iris_clf": {"num_replicas": 2}}) == old
    )


def _num_replicas(target: Any, **options: Any) -> dict[str, Any]:
    """Each deployment ``deployment(target, **options)`` makes -> its ``num_replicas``."""
    from bentoml_ray._application import plan_layout

    layout = plan_layout(target, options, environ=os.environ)
    return {spec.name: spec.options.get("num_replicas", 1) for spec in layout.specs}


def test_deployment_needs_no_running_ray(iris_bento: str) -> None:
    script = (
        "import ray, bentoml_ray\n"
        f"app = bentoml_ray.deployment({iris_bento!r}, {{'num_replicas': 2}})\n"
        "assert not ray.is_initialized(), 'deployment() started Ray'\n"
        "print(type(app).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "RAY_ADDRESS": ""},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Application"
