"""Fails loudly, naming the missing piece, when a BentoML release moves an internal we use."""

from __future__ import annotations

import inspect
import os

import bentoml
import numpy as np
import pydantic
import pytest
from bentoml.io import JSON, File, Image, NumpyNdarray, PandasDataFrame, Text

from bentoml_ray import _bentoml_internals as internals

#: What BentoML moves between releases: every leg of the compatibility suite runs it.
pytestmark = pytest.mark.compat


def test_every_internal_name_resolves() -> None:
    for name in internals.__all__:
        assert getattr(internals, name) is not None, name


def test_legacy_service_is_bentomls_public_one() -> None:
    assert internals.LegacyService is bentoml.legacy.Service


def test_runner_handle_interface_is_what_ray_runner_handle_implements() -> None:
    for method in ("is_ready", "run_method", "async_run_method", "async_stream_method"):
        assert hasattr(internals.RunnerHandle, method), method
    assert hasattr(internals.Runner, "init_client") and hasattr(internals.Runner, "init_local")
    assert issubclass(internals.LocalRunnerRef, internals.RunnerHandle)
    assert "_runnable" in internals.LocalRunnerRef.__init__.__code__.co_names  # runnable_of


def test_io_descriptor_internals() -> None:
    assert internals.numpy_dtype(NumpyNdarray(dtype="float32")) == np.dtype("float32")
    assert internals.numpy_dtype(NumpyNdarray()) is None
    assert internals.numpy_dtype(JSON()) is None
    assert isinstance(JSON(), internals.JSON)
    assert internals.numpy_shape(NumpyNdarray(shape=(-1, 4))) == (-1, 4)
    assert internals.numpy_shape(NumpyNdarray()) is None

    class Point(pydantic.BaseModel):
        x: float

    assert internals.json_model(JSON(pydantic_model=Point)) is Point
    assert internals.json_model(JSON()) is None
    assert isinstance(PandasDataFrame(), internals.PandasDataFrame)
    assert isinstance(Text(), internals.Text) and internals.Image is Image  # needs Pillow
    assert isinstance(File(), internals.File)


def test_batch_containers_round_trip() -> None:
    merged, offsets = internals.AutoContainer.batches_to_batch([np.ones(2), np.zeros(3)], 0)
    assert list(offsets) == [0, 2, 5]
    parts = internals.AutoContainer.batch_to_batches(merged, offsets, 0)
    assert [len(p) for p in parts] == [2, 3]


def test_swagger_ui_assets_and_home() -> None:
    assert "swagger-ui" in internals.INDEX_HTML
    assert os.path.isfile(os.path.join(internals.STATIC_CONTENT_DIR, "swagger-ui-bundle.js"))
    assert os.path.isdir(internals.bentoml_home())


def test_a_bentos_models_are_found_for_shipping(iris_bento: str) -> None:
    paths = internals.bento_model_paths(bentoml.get(iris_bento))
    assert [tag.name for tag in paths] == ["iris_clf"]
    assert all((path / "model.yaml").is_file() for path in paths.values())


def test_the_settings_and_hooks_the_1_2_app_changes() -> None:
    assert internals.tracing_exporter_type() is None  # BentoML's default: no tracing
    # RayServiceAppFactory replaces these: BentoML's timeout by its ``timeout`` argument,
    # the response headers, looked up per response, and where sync API functions run.
    assert "timeout" in internals.TimeoutMiddleware.__init__.__code__.co_varnames
    factory = internals.ServiceAppFactory
    for method in ("_add_response_headers", "_to_thread"):
        assert method in factory.api_endpoint_wrapper.__code__.co_names + (
            factory.api_endpoint.__code__.co_names
        ), method


def test_what_the_1_2_replicas_read_from_a_service() -> None:
    init = inspect.unwrap(internals.ServiceAppFactory.__init__)  # BentoML injects its config
    assert "_service_instance" in init.__code__.co_names  # service_instance

    @bentoml.service
    class WithHook:
        @bentoml.on_deployment
        def prepare() -> None:  # BentoML's deployment hooks take no argument
            pass

        @bentoml.api
        def echo(self, text: str) -> str:
            return text

    assert [hook.__name__ for hook in internals.deployment_hooks(WithHook)] == ["prepare"]


def test_what_the_hub_replaces_in_bentomls_task_handling() -> None:
    """``RayServiceAppFactory`` swaps the result store after ``create_instance``, runs each
    task through ``_run_task`` and answers ``cancel_task``; ``HubResultStore`` implements
    BentoML's ``ResultStore`` with its rows and serialisation."""
    factory = internals.ServiceAppFactory
    assert "_result_store" in factory.create_instance.__code__.co_names
    assert "_run_task" in factory.submit_task.__code__.co_names
    for handler in ("get_status", "get_result", "retry_task", "cancel_task"):
        assert "_result_store" in getattr(factory, handler).__code__.co_names, handler
    abstract = internals.ResultStore.__abstractmethods__
    assert abstract == {"get_status", "get", "new_entry", "set_result", "set_status"}
    assert {status.value for status in internals.ResultStatus} >= {
        "in_progress", "completed", "failed", "canceled"
    }  # fmt: skip
    assert {"serialize_request", "deserialize_response"} <= set(dir(internals.JSONSerde))
    # BentoML closes the store when the service stops: the hub's store must take that.
    from bentoml_ray._services.task_store import HubResultStore

    assert "__aexit__" in factory.destroy_instance.__code__.co_names
    assert hasattr(HubResultStore, "__aexit__")


def test_the_configuration_cors_and_request_metrics_read() -> None:
    assert internals.cors_options() is None  # BentoML's default: CORS off
    enabled, namespace, buckets = internals.request_metrics_config()
    assert enabled and namespace == "bentoml_api_server" and buckets[-1] == float("inf")
