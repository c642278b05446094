"""What differs between Ray releases: read from the installed Ray, named in errors.

A Ray known not to work with the installed protobuf is refused with what to install; the
check is tested with the condition injected, on any Ray.

These run on every leg of the compatibility suite, so each end of the range checks its own
side: the newest Ray takes every option of the table, the oldest refuses the newer ones
with the release that brought them.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

import bentoml_ray
from bentoml_ray import InvalidDeploymentConfig, UnsupportedEnvironment, _ray_compat
from bentoml_ray._ray_compat import (
    NEWER_RAY_OPTIONS,
    RAY_BATCH_OPTIONS,
    RAY_DEPLOYMENT_OPTIONS,
    environment_problem,
    ray_version,
)

pytestmark = pytest.mark.compat

MISSING = sorted(set(NEWER_RAY_OPTIONS) - RAY_DEPLOYMENT_OPTIONS - RAY_BATCH_OPTIONS)


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_table_matches_the_installed_ray() -> None:
    # An option of the table is missing exactly when this Ray is older than its release.
    for option, since in NEWER_RAY_OPTIONS.items():
        missing = option in MISSING
        assert missing == (_release(ray_version()) < _release(since)), (option, since)


def test_route_prefix_is_never_a_ray_deployment_option() -> None:
    # Rays up to 2.55 still list it, and refuse it at the deployment level.
    assert "route_prefix" not in RAY_DEPLOYMENT_OPTIONS


@pytest.mark.skipif(not MISSING, reason=f"Ray {ray_version()} takes every option bentoml-ray knows")
@pytest.mark.parametrize("option", MISSING)
def test_an_option_newer_than_this_ray_names_the_release_it_needs(
    iris_bento: str, option: str
) -> None:
    since = NEWER_RAY_OPTIONS[option]
    kwargs: dict[str, Any]
    if option in ("max_concurrent_batches", "batch_size_fn"):
        kwargs = {
            "enable_batching": True,
            "batching_config": {"iris_clf": {"predict": {option: 2}}},
        }
    else:
        kwargs = {"runner_deployment_config": {"iris_clf": {option: 1}}}
    with pytest.raises(InvalidDeploymentConfig, match=f"'{option}' needs Ray {since} or newer"):
        bentoml_ray.deployment(iris_bento, **kwargs)


@pytest.mark.parametrize(
    ("ray", "protobuf_has_label", "refused"),
    [
        ("2.56.1", False, True),  # protobuf 7 removed FieldDescriptor.label
        ("2.47.1", False, True),
        ("2.56.1", True, False),  # protobuf 6 or older
        ("2.57.1", False, False),  # Ray reads it without label
        ("3.0.0", False, False),
    ],
)
def test_old_ray_with_protobuf_7_is_named_with_what_to_install(
    ray: str, protobuf_has_label: bool, refused: bool
) -> None:
    problem = environment_problem(ray, protobuf_has_label)
    if not refused:
        assert problem is None
        return
    assert problem is not None
    assert f"Ray {ray}" in problem and "FieldDescriptor.label" in problem
    assert "pip install 'protobuf<7'" in problem and problem.count(". ") == 0  # one sentence


def test_this_environment_is_not_refused() -> None:
    # Every leg of the compatibility suite pins protobuf<7 where its Ray needs it.
    assert environment_problem() is None


def test_deployment_refuses_a_known_bad_environment_before_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ray_compat, "ray_version", lambda: "2.56.0")
    monkeypatch.setattr(_ray_compat, "protobuf_has_field_label", lambda: False)
    with pytest.raises(UnsupportedEnvironment, match=r"pip install 'protobuf<7'") as info:
        bentoml_ray.deployment("no_such_bento:latest")  # refused before the tag is looked up
    assert isinstance(info.value, bentoml_ray.BentoRayError)


def test_the_model_router_is_used_where_ray_takes_request_routers() -> None:
    """Its path names the class; Ray 2.47, which takes no request router, keeps its own."""
    path = _ray_compat.model_router_path()
    if "request_router_config" not in _ray_compat.RAY_DEPLOYMENT_OPTIONS:
        assert path is None
        return
    assert path is not None
    module, _, name = path.rpartition(".")
    router = getattr(importlib.import_module(module), name)
    from ray.serve.request_router import RequestRouter

    assert issubclass(router, RequestRouter)


@pytest.mark.parametrize(
    ("ray", "waits"), [("2.47.1", True), ("2.50.1", True), ("2.51.0", False), ("3.0.0", False)]
)
def test_replicas_of_a_ray_that_waits_on_dead_callers_wait_less(ray: str, waits: bool) -> None:
    env_vars = _ray_compat.replica_env_vars(ray)
    assert env_vars == ({"RAY_core_worker_rpc_server_reconnect_timeout_s": "5"} if waits else {})


def test_every_replica_gets_the_shorter_wait_under_the_users_env_vars(
    counted_bento: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub too: a callee of every replica, as the runners and dependencies are."""
    from bentoml_ray._application import plan_layout

    monkeypatch.setattr(_ray_compat, "ray_version", lambda: "2.47.1")
    name = "RAY_core_worker_rpc_server_reconnect_timeout_s"
    mine = {"ray_actor_options": {"runtime_env": {"env_vars": {name: "30"}}}}
    layout = plan_layout(counted_bento, {"service_deployment_config": mine}, {"COUNTED_TOKEN": "t"})
    root_env = layout._declare(layout.ingress).ray_actor_options["runtime_env"]["env_vars"]
    assert root_env[name] == "30" and root_env["COUNTED_TOKEN"] == "t"
    hub_env = layout._declare_hub().ray_actor_options["runtime_env"]["env_vars"]
    assert hub_env == {name: "5"}
