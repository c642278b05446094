"""Offline inference without Ray: the plan's checks, the column conversions, and the actor's
own work on real services loaded in this process (Ray Data runs it in tests/integration).
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import bentoml
import numpy as np
import pytest
from _support import FIXTURES, bentoml_config_restored

import bentoml_ray
from bentoml_ray import (
    BentoRayError,
    InvalidArgument,
    InvalidDeploymentConfig,
    MissingColumn,
    MissingExtra,
    RowFailed,
)
from bentoml_ray._bento.source import resolve_target
from bentoml_ray._offline.actor import BentoApiActor
from bentoml_ray._offline.columns import column_of, result_columns, split_rows
from bentoml_ray._offline.errors import row_failed
from bentoml_ray._offline.map_api import _check_ray_data_options, map_api
from bentoml_ray._offline.plan import ApiPlan, plan_api

VIRGINICA = [5.9, 3.0, 5.1, 1.8]


_bentoml_config_restored = pytest.fixture(autouse=True, scope="module")(bentoml_config_restored)


@pytest.fixture(scope="module")
def probe() -> Any:
    return bentoml.load(
        "service:OfflineProbe", working_dir=str(FIXTURES / "offline_probe"), reload=True
    )


def plan(svc: Any, api: str, columns: list[str], **given: Any) -> ApiPlan:
    options: dict[str, Any] = {
        "input_columns": None, "output_column": "output", "on_error": "raise",
        "error_column": "error", **given,
    }  # fmt: skip
    return plan_api(svc, api, columns, **options)


def actor(target: Any, api: str, columns: list[str], **given: Any) -> BentoApiActor:
    source, svc = resolve_target(target)
    return BentoApiActor(source, plan(svc, api, columns, **given), str(svc.name), {}, None)


# First in the module: a runner-based Bento loads only before a 1.2+ service has swapped
# BentoML's configuration (restored when the module ends).
def test_a_runner_api_gets_the_batch_as_its_array(iris_bento: str) -> None:
    _, svc = resolve_target(iris_bento)
    found = plan(svc, "classify", ["input_series"])
    assert found.per_batch and found.runner_input == "ndarray"
    assert found.default_batch_size is None  # Ray Data's own
    rows = np.array([VIRGINICA, [5.1, 3.5, 1.4, 0.2]] * 5)
    answer = actor(iris_bento, "classify", ["input_series"])({"input_series": rows})
    assert answer["output"].tolist() == [2, 0] * 5
    # Scalar columns side by side make the rows, when input_columns names them.
    columns = {name: rows[:, i] for i, name in enumerate(["a", "b", "c", "d"])}
    side_by_side = actor(iris_bento, "classify", list(columns), input_columns=list(columns))
    assert side_by_side(columns)["output"].tolist() == [2, 0] * 5
    with pytest.raises(InvalidDeploymentConfig, match=r"column 'input_series'.*input_columns"):
        plan(svc, "classify", ["a", "b"])
    with pytest.raises(InvalidDeploymentConfig, match="names 'e', not in the Dataset"):
        plan(svc, "classify", ["a", "b"], input_columns=["a", "e"])
    with pytest.raises(InvalidDeploymentConfig, match="input_columns names no column"):
        plan(svc, "classify", ["a", "b"], input_columns=[])
    # What the descriptor (float64, shape (-1, 4)) cannot take fails its rows, not the job.
    bad = {"input_series": np.array([["a"] * 4, ["b"] * 4])}
    kept = actor(iris_bento, "classify", ["input_series"], on_error="column")(bad)
    assert kept["output"].tolist() == [None, None] and "convert string" in kept["error"][0]


def test_a_batchable_api_gets_the_batch_in_one_call(probe: Any) -> None:
    found = plan(probe, "measure", ["texts", "id"])
    assert found.per_batch and found.default_batch_size == 16  # its max_batch_size
    assert found.inputs == (("texts", "texts"),) and found.runner_input is None
    texts = [f"row {i}" * (i % 3 + 1) for i in range(40)]
    answer = actor(probe, "measure", ["texts"])({"texts": np.array(texts, dtype=object)})
    assert list(answer["batch"]) == [40] * 40  # Ray Data's batch size is the caller's
    assert list(answer["length"]) == [len(text) for text in texts]  # a dict's keys: columns
    assert list(answer["texts"]) == texts  # the input columns stay


def test_an_api_is_called_per_row_with_its_parameters_from_columns(probe: Any) -> None:
    found = plan(probe, "scale", ["value", "factor"])
    assert not found.per_batch and found.inputs == (("value", "value"), ("factor", "factor"))
    assert plan(probe, "scale", ["value"]).inputs == (("value", "value"),)  # factor defaults
    answer = actor(probe, "scale", ["value"])({"value": np.array([1.0, 2.5])})
    assert answer["output"].tolist() == [2.0, 5.0]
    streamed = actor(probe, "words", ["text"])({"text": np.array(["a b", "c"], dtype=object)})
    assert streamed["output"].tolist() == ["a b ", "c "]  # a stream, joined


def test_an_array_api_gets_the_tensor_column_as_one_array(probe: Any) -> None:
    rows = np.arange(24, dtype=float).reshape(12, 2)
    answer = actor(probe, "row_means", ["rows"])({"rows": rows})
    assert answer["output"].tolist() == rows.mean(axis=1).tolist()
    # Ray Data's batches may be read-only; the API gets a copy it may change in place.
    rows.setflags(write=False)
    centred = actor(probe, "centre", ["rows"])({"rows": rows})
    assert centred["output"].tolist() == (rows - rows.mean(axis=1, keepdims=True)).tolist()
    assert centred["rows"] is rows and rows[0].tolist() == [0.0, 1.0]  # the input, untouched


def test_failed_rows_get_their_error_or_fail_the_job_naming_the_row(
    probe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.data import DataContext
    from ray.exceptions import UserCodeException

    values = np.array([1.0, -3.0, 2.0])
    kept = actor(probe, "scale", ["value"], on_error="column")({"value": values})
    assert kept["output"].tolist() == [2.0, None, 4.0]
    assert kept["error"][0] is None and kept["error"][2] is None
    assert kept["error"][1] == "ValueError: negative value -3.0"
    # In a Ray Data task, the current DataContext is that task's copy; here, this process's.
    context = DataContext.get_current()
    monkeypatch.setattr(context, "raise_original_map_exception", False)
    named = r"'scale' failed on the row \{'value': -3.0\}"
    with pytest.raises(RowFailed, match=named) as raised:
        actor(probe, "scale", ["value"])({"value": values})
    failed = raised.value
    assert failed.api == "scale" and failed.row == {"value": -3.0}
    assert type(failed.error) is ValueError and str(failed.error) == "negative value -3.0"
    assert failed.__cause__ is failed.error
    assert failed.summary == (
        "API 'scale' failed on the row {'value': -3.0}: ValueError: negative value -3.0."
    )
    # Ray Data lets it through to the driver as it is, as an error in user code.
    assert context.raise_original_map_exception is True
    assert isinstance(failed, BentoRayError) and isinstance(failed, UserCodeException)
    assert bentoml_ray.ApiFailedOnRow is RowFailed

    # Ray pickles it to the driver: the attributes and the cause come through.
    carried = pickle.loads(pickle.dumps(failed))
    assert (carried.api, carried.row, str(carried)) == (failed.api, failed.row, str(failed))
    assert type(carried.error) is ValueError and carried.__cause__ is carried.error

    # A batch its input model rejects is called again row by row: one row fails, not 16.
    texts = np.array(["a", None, "abc"], dtype=object)
    kept = actor(probe, "measure", ["texts"], on_error="column")({"texts": texts})
    assert kept["length"].tolist() == [1, None, 3] and kept["batch"].tolist() == [1, None, 1]
    assert "ValidationError" in kept["error"][1] and kept["error"][0] is None


def test_wrong_apis_columns_and_options_are_refused_naming_what_is_allowed(probe: Any) -> None:
    with pytest.raises(InvalidDeploymentConfig, match=r"no API 'mesure'.*'measure'.*Its APIs"):
        plan(probe, "mesure", ["texts"])
    with pytest.raises(MissingColumn, match=r"needs the column.*'value'.*Its columns") as info:
        plan(probe, "scale", ["values"])
    assert info.value.missing == ("value",) and isinstance(info.value, InvalidArgument)
    with pytest.raises(InvalidDeploymentConfig, match=r"on_error must be 'raise'.*or 'column'"):
        plan(probe, "scale", ["value"], on_error="skip")
    with pytest.raises(InvalidDeploymentConfig, match="input_columns is for runner-based"):
        plan(probe, "scale", ["value"], input_columns=["value"])
    with pytest.raises(InvalidDeploymentConfig, match="output_column 'value' is a column"):
        plan(probe, "scale", ["value"], output_column="value")
    with pytest.raises(InvalidDeploymentConfig, match="error_column 'error' is a column"):
        plan(probe, "scale", ["value", "error"], on_error="column")
    with pytest.raises(InvalidDeploymentConfig, match=r"'batch_sise'.*Did you mean 'batch_size'"):
        _check_ray_data_options({"batch_sise": 10})
    with pytest.raises(InvalidDeploymentConfig, match="map_api sets 'batch_format' itself"):
        _check_ray_data_options({"batch_format": "pandas"})
    with pytest.raises(InvalidDeploymentConfig, match="batch_size must be a whole number"):
        _check_ray_data_options({"batch_size": 0})
    with pytest.raises(InvalidDeploymentConfig, match=r"takes a ray.data.Dataset.*not list"):
        map_api([{"value": 1.0}], probe, "scale")
    options = {"batch_size": 8, "num_cpus": 0.5, "resources": {"far": 1}, "concurrency": 2}
    assert _check_ray_data_options(options) == options


class _NotRebuilt(Exception):
    """Pickles, but cannot be rebuilt from its args (its constructor wants two)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def test_a_failed_row_whose_error_cannot_travel_gets_a_stand_in() -> None:
    failed = row_failed("scale", {"value": 1.0}, _NotRebuilt("no", 7))
    assert type(failed.error) is RuntimeError and str(failed.error) == "_NotRebuilt: no"
    assert failed.summary == "API 'scale' failed on the row {'value': 1.0}: _NotRebuilt: no."
    assert pickle.loads(pickle.dumps(failed)).summary == failed.summary
    kept = ValueError("fine")
    assert row_failed("scale", {}, kept).error is kept


def test_without_ray_data_map_api_says_what_to_install(
    probe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray.data", None)  # as if pyarrow were missing
    with pytest.raises(MissingExtra, match=r"needs Ray Data.*pip install 'bentoml-ray\[data\]'\.$"):
        map_api(object(), probe, "scale")


def test_results_become_columns() -> None:
    assert [row.tolist() for row in split_rows(np.array([[1, 2], [3, 4]]), 2)] == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="a batch of 3 rows gave 2 values"):
        split_rows([1, 2], 3)
    with pytest.raises(TypeError, match="gave one ndarray"):
        split_rows(np.array(5), 1)  # one value for the batch, not one per row
    # A tuple of per-row parts (labels, scores) is one tuple per row, whatever the count.
    assert split_rows((np.array([0, 1]), [0.9, 0.8]), 2) == [(0, 0.9), (1, 0.8)]
    assert split_rows(("a", "b"), 2) == ["a", "b"]
    texts = column_of(["a", "bbbbbbbb"])
    assert texts.dtype == object and column_of([b"\x00\x00"])[0] == b"\x00\x00"
    spread = result_columns([{"a": 1, "b": "x"}, None, {"a": 3}], "output")
    assert spread["a"].tolist() == [1, None, 3] and spread["b"].tolist() == ["x", None, None]
    assert result_columns([1.5, 2.5], "score")["score"].dtype == np.float64
    assert result_columns(np.array([1, 2]), "output")["output"].dtype == np.int64
    assert column_of([[1], [2, 3]]).dtype == object  # ragged: one object per row
