"""Many models behind one API, off Ray: the loader's checks and LRU, the request's model id.

The LRU here is the one ``bentoml serve``'s workers (and Ray Data's actors) use; in a Ray
Serve replica the loader is Ray's multiplexing, tested in ``integration/test_multiplexing``.
The example service answers here in BentoML's app for it, as a replica runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import bentoml
import pytest
from _support import EXAMPLES, bentoml_config_restored, load_module
from starlette.testclient import TestClient

import bentoml_ray
from bentoml_ray import BentoRayError, InvalidArgument
from bentoml_ray._multiplexing import MODEL_ID_HEADER, multiplexed_loaders, running_for
from bentoml_ray._replica.batch_gate import by_model
from bentoml_ray._runners.layout import refuse_multiplexed_runnables
from bentoml_ray._services.app_factory import RayServiceAppFactory

_bentoml_config_restored = pytest.fixture(autouse=True, scope="module")(bentoml_config_restored)


class Loads:
    """A service-like class whose loader counts what it loads."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    @bentoml_ray.multiplexed(max_models_per_replica=2)
    async def get_model(self, model_id: str) -> str:
        await asyncio.sleep(0.01)  # a load that yields, so concurrent asks overlap it
        self.loaded.append(model_id)
        return f"model {model_id}"


@pytest.mark.parametrize("limit", [0, -1, True, 2.0, "2", None])
def test_max_models_per_replica_is_a_whole_number_of_at_least_one(limit: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"max_models_per_replica .* at least 1"):
        bentoml_ray.multiplexed(max_models_per_replica=limit)


def test_a_loader_is_async_and_takes_the_model_id() -> None:
    with pytest.raises(BentoRayError, match=r"async loader.*async def"):

        @bentoml_ray.multiplexed()
        def blocking(self: Any, model_id: str) -> None: ...

    with pytest.raises(BentoRayError, match=r"load\(self, model_id\).*takes \(self\)"):

        @bentoml_ray.multiplexed()
        async def no_id(self: Any) -> None: ...

    assert multiplexed_loaders(Loads) == ["get_model"]


def test_the_lru_keeps_the_most_recent_models_and_loads_each_once() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        owner = Loads()
        # Five callers ask for "a" at once: one load.
        answers = await asyncio.gather(*(owner.get_model("a") for _ in range(5)))
        await owner.get_model("b")
        await owner.get_model("a")  # "a" is now the most recent, "b" the oldest
        await owner.get_model("c")  # evicts "b"
        await owner.get_model("a")  # still held
        await owner.get_model("b")  # loaded again, evicting "c"
        return list(answers), owner.loaded

    answers, loaded = asyncio.run(scenario())
    assert answers == ["model a"] * 5
    assert loaded == ["a", "b", "c", "b"]


def test_each_instance_has_its_own_models() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        first, second = Loads(), Loads()
        await first.get_model("a")
        await second.get_model("a")
        return first.loaded, second.loaded

    assert asyncio.run(scenario()) == (["a"], ["a"])


def test_model_id_outside_a_request_and_chosen_for_a_block() -> None:
    assert bentoml_ray.model_id() == ""
    with bentoml_ray.for_model("tenant-b"):
        assert bentoml_ray.model_id() == "tenant-b"
        with running_for(""):  # a batch of calls that named no model
            assert bentoml_ray.model_id() == ""
    assert bentoml_ray.model_id() == ""
    with pytest.raises(InvalidArgument, match="non-empty string"):
        bentoml_ray.for_model("")


def test_a_batch_never_mixes_model_ids() -> None:
    seen: list[tuple[str, list[int]]] = []

    async def run_batch(values: list[int]) -> list[int]:
        seen.append((bentoml_ray.model_id(), values))
        return [value * 10 for value in values]

    calls = [("a", 1), ("b", 2), ("a", 3), ("", 4), ("b", 5)]
    assert asyncio.run(by_model(calls, run_batch)) == [10, 20, 30, 40, 50]
    assert seen == [("a", [1, 3]), ("b", [2, 5]), ("", [4])]


def test_the_example_answers_by_the_header_in_bentomls_app() -> None:
    """The header names the model; one named by none is a 400 that says what to send.

    (``integration/test_multiplexing`` compares the root's answers with ``bentoml serve``.)
    """
    example = load_module(EXAMPLES / "tenants" / "service.py", "tenants_example")
    service: Any = example.Tenants
    with contextlib.contextmanager(bentoml_config_restored)():
        service.inject_config()
        factory = RayServiceAppFactory(service, is_main=True, batching={})
        _answers_each_tenant(TestClient(factory()))


def _answers_each_tenant(app_client: TestClient) -> None:
    with app_client as client:
        for tenant in ("tenant-0", "tenant-1", "tenant-0"):
            response = client.post(
                "/predict", json={"x": [[5.9, 3.0, 5.1, 1.8]]}, headers={MODEL_ID_HEADER: tenant}
            )
            assert response.status_code == 200, response.text
            assert response.json()["model"] == tenant
        # Proxies that turn "_" into "-" (nginx, API gateways): read as Ray reads them.
        response = client.post(
            "/predict",
            json={"x": [[5.9, 3.0, 5.1, 1.8]]},
            headers={MODEL_ID_HEADER.replace("_", "-"): "tenant-2"},
        )
        assert response.json()["model"] == "tenant-2"
        missing = client.post("/predict", json={"x": [[5.9, 3.0, 5.1, 1.8]]})
        assert missing.status_code == 400
        assert MODEL_ID_HEADER in missing.text


class TenantRunnable(bentoml.Runnable):
    """A runnable with a loader: refused, with what to do instead."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @bentoml_ray.multiplexed()
    async def get_model(self, model_id: str) -> str:
        return model_id

    @bentoml.Runnable.method(batchable=False)
    def predict(self, x: Any) -> Any:
        return x


tenant_svc = bentoml.legacy.Service(  # a Bento's service, loaded
    "tenant_svc", runners=[bentoml.Runner(TenantRunnable, name="tenant_runner")]
)


def test_a_runnable_with_a_loader_is_refused_before_anything_deploys() -> None:
    """``runner_layout`` checks this first, before any option (and so before deploying)."""
    with pytest.raises(BentoRayError, match=r"tenant_runner.*bentoml_ray.model_id\(\)"):
        refuse_multiplexed_runnables(tenant_svc.runners)
