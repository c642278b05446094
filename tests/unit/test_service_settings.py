"""A 1.2+ service's settings that become Ray options: concurrency, accelerators, envs.

Checked against a real Bento (tests/fixtures/counted_service: ``traffic.concurrency`` 8,
an ``envs`` entry without a value) through the same planning ``deployment()`` runs.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import bentoml
import pytest

from bentoml_ray import InvalidDeploymentConfig
from bentoml_ray._application import plan_layout
from bentoml_ray._services.service_options import GPU_TYPES, deployment_defaults


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTED_TOKEN", "from-the-driver")


def _root_options(bento: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    layout = plan_layout(bento, {"service_deployment_config": options}, os.environ)
    return dict(layout.ingress.options)


def test_concurrency_is_the_autoscaling_target_where_autoscaling_is_on(counted_bento: str) -> None:
    autoscaling = {"min_replicas": 1, "max_replicas": 3}
    options = _root_options(counted_bento, {"autoscaling_config": autoscaling})
    assert options["autoscaling_config"] == {**autoscaling, "target_ongoing_requests": 8}
    assert "num_replicas" not in options


def test_concurrency_leaves_a_fixed_replica_count_alone(counted_bento: str) -> None:
    assert "autoscaling_config" not in _root_options(counted_bento)
    assert "autoscaling_config" not in _root_options(counted_bento, {"num_replicas": 2})


def test_the_users_target_wins_and_auto_replicas_take_the_services(counted_bento: str) -> None:
    given = {"max_replicas": 2, "target_ongoing_requests": 3}
    options = _root_options(counted_bento, {"autoscaling_config": given})
    assert options["autoscaling_config"]["target_ongoing_requests"] == 3
    auto = _root_options(counted_bento, {"num_replicas": "auto"})
    assert auto["autoscaling_config"] == {"target_ongoing_requests": 8}


def test_an_env_without_a_value_takes_the_drivers(counted_bento: str) -> None:
    layout = plan_layout(counted_bento, {}, os.environ)
    assert layout.ingress.env_vars["COUNTED_TOKEN"] == "from-the-driver"


def test_an_env_unset_everywhere_raises_naming_it(
    counted_bento: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COUNTED_TOKEN")
    with pytest.raises(InvalidDeploymentConfig, match="'COUNTED_TOKEN' without a value"):
        plan_layout(counted_bento, {}, os.environ)
    given = {"ray_actor_options": {"runtime_env": {"env_vars": {"COUNTED_TOKEN": "mine"}}}}
    layout = plan_layout(counted_bento, {"service_deployment_config": given}, os.environ)
    assert "COUNTED_TOKEN" not in layout.ingress.env_vars  # the user's, merged in at bind


def test_a_serve_config_being_written_leaves_envs_without_value_to_the_cluster(
    counted_bento: str,
) -> None:
    layout = plan_layout(counted_bento, {}, environ=None)  # what `bentoml-ray build` plans
    assert "COUNTED_TOKEN" not in layout.ingress.env_vars
    assert "COUNTED_TOKEN" not in layout.source.runtime_env.get("env_vars", {})


def test_a_written_serve_config_holds_no_value_of_the_drivers(counted_bento: str) -> None:
    import json

    from bentoml_ray._deploy.serve_config import config_of_plan, plan_application

    written = json.dumps(config_of_plan(plan_application(counted_bento)))  # `bentoml-ray build`
    assert "from-the-driver" not in written  # `serve`/`deploy` pass their environment


def test_gpu_and_tpu_types_become_ray_accelerator_types() -> None:
    @bentoml.service(resources={"gpu": 1, "gpu_type": "nvidia-tesla-t4"})
    class OnT4:
        @bentoml.api
        def ping(self) -> str:
            return "pong"

    assert deployment_defaults(OnT4)["ray_actor_options"] == {
        "num_gpus": 1.0,
        "accelerator_type": "T4",
    }
    on_tpu = SimpleNamespace(config={"resources": {"tpu_type": "v5e-2x2"}})
    assert deployment_defaults(on_tpu)["ray_actor_options"] == {"accelerator_type": "TPU-V5LITEPOD"}


def test_every_gpu_type_bentoml_knows_has_a_ray_name() -> None:
    from typing import get_args, get_type_hints

    from _bentoml_sdk.service.config import ResourceSchema

    known = get_args(get_type_hints(ResourceSchema)["gpu_type"])
    assert known and set(known) <= set(GPU_TYPES)


def test_an_unknown_gpu_type_raises_naming_the_known_ones() -> None:
    # BentoML's own schema refuses unknown names at import; a newer BentoML may know more.
    unknown = SimpleNamespace(config={"resources": {"gpu_type": "nvidia-z9000"}})
    with pytest.raises(ValueError, match="'nvidia-z9000' has no Ray accelerator type") as info:
        deployment_defaults(unknown)
    assert "nvidia-tesla-t4" in str(info.value) and "accelerator_type" in str(info.value)
