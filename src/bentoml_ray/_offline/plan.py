"""How one API of a Bento is called over a Dataset's columns, decided in the driver.

Every check ``map_api`` makes before the job starts lives here: the API exists, the
columns its parameters come from are in the Dataset, and its input is one this module
knows how to build from columns. The result, an ``ApiPlan``, is what each actor follows.

- A 1.2+ API: each named parameter is the column of the same name. A batchable API is
  called once per Dataset batch with the column's values as its batch (the batch size
  defaults to the API's ``max_batch_size``); any other API once per row.
- A runner-based API: its IO descriptor decides. ``NumpyNdarray`` (whose shape, if any, has
  a free first dimension) and ``PandasDataFrame`` get the rows of a batch at once: the
  batch's array, or its DataFrame; ``JSON``, ``Text``, ``Image`` and ``File`` are called
  once per row with the row's value (bytes for images and files).

Runs in the driver.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._bentoml_internals import (
    JSON,
    File,
    Image,
    LegacyService,
    NumpyNdarray,
    PandasDataFrame,
    Text,
    numpy_shape,
)
from .._errors import InvalidArgument, MissingColumn, did_you_mean

#: How a runner-based API's input is built from columns (its IO descriptor's kind).
RunnerInput = Literal["ndarray", "dataframe", "json", "text", "image", "file"]

_RUNNER_INPUTS: tuple[tuple[type, RunnerInput], ...] = (
    (NumpyNdarray, "ndarray"),
    (PandasDataFrame, "dataframe"),
    (JSON, "json"),
    (Text, "text"),
    (Image, "image"),
    (File, "file"),
)

ON_ERROR = ("raise", "column")


@dataclass(frozen=True)
class ApiPlan:
    """One API's calls over a Dataset, as every actor makes them."""

    api: str
    #: (parameter, column) for each input the API takes from the Dataset; for a runner
    #: API that takes a DataFrame, (column, column) for each column of it.
    inputs: tuple[tuple[str, str], ...]
    #: Called once per Dataset batch (the API takes a batch), else once per row.
    per_batch: bool
    #: Ray Data's batch size unless the caller gives one: a batchable 1.2+ API's
    #: ``max_batch_size``, the most ``bentoml serve`` would hand it (None: Ray Data's).
    default_batch_size: int | None
    #: A runner-based API's input kind; None for a 1.2+ API.
    runner_input: RunnerInput | None
    #: Where a result goes, unless it is a mapping (whose keys become columns).
    output_column: str
    #: Where a failed row's error goes; None: the first failed row fails the job.
    error_column: str | None


def plan_api(
    svc: Any,
    api: object,
    columns: Sequence[str],
    *,
    input_columns: Sequence[str] | None,
    output_column: str,
    on_error: str,
    error_column: str,
) -> ApiPlan:
    """Check the API and its columns against the loaded service; how to call it."""
    apis = list(svc.apis)
    if not isinstance(api, str) or api not in svc.apis:
        raise InvalidArgument(
            f"{svc.name!r} has no API {api!r}.{did_you_mean(str(api), apis)} "
            f"Its APIs: {', '.join(apis) or 'none'}."
        )
    if on_error not in ON_ERROR:
        raise InvalidArgument(
            f"on_error must be 'raise' (the first failed row fails the job) or 'column' "
            f"(a failed row gets its error in {error_column!r}), not {on_error!r}."
        )
    for name, value in (("output_column", output_column), ("error_column", error_column)):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{name} must be a non-empty string, not {value!r}.")
    if input_columns is not None:
        if not input_columns:
            raise InvalidArgument("input_columns names no column; give at least one.")
        _check_columns_exist(list(input_columns), columns, "input_columns")
    error = error_column if on_error == "column" else None
    answers = {"output_column": output_column, "error_column": error}
    for option, taken in answers.items():
        if taken is not None and taken in columns:
            raise InvalidArgument(
                f"{option} {taken!r} is a column of the Dataset already; the answers would "
                f"replace it. Give {option} another name."
            )
    if isinstance(svc, LegacyService):
        return _plan_runner_api(svc, api, columns, input_columns, output_column, error)
    if input_columns is not None:
        raise InvalidArgument(
            "input_columns is for runner-based Bentos; a 1.2+ API takes each parameter from "
            "the column of the same name (rename columns with Dataset.rename_columns)."
        )
    return _plan_service_api(svc, api, columns, output_column, error)


def _check_columns_exist(wanted: list[str], columns: Sequence[str], what: str) -> None:
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise MissingColumn(
            f"{what} names {', '.join(map(repr, missing))}, not in the Dataset."
            f"{did_you_mean(missing[0], columns)} Its columns: {', '.join(columns) or 'none'}.",
            missing,
        )


def _plan_runner_api(
    svc: Any,
    name: str,
    columns: Sequence[str],
    input_columns: Sequence[str] | None,
    output_column: str,
    error_column: str | None,
) -> ApiPlan:
    api = svc.apis[name]
    descriptor = api.input
    kind = next((k for cls, k in _RUNNER_INPUTS if isinstance(descriptor, cls)), None)
    if kind is None:
        known = ", ".join(cls.__name__ for cls, _ in _RUNNER_INPUTS)
        raise InvalidArgument(
            f"API {name!r} takes {type(descriptor).__name__}, which offline inference does not "
            f"build from columns; it builds {known}."
        )
    if kind == "dataframe":
        picked = list(input_columns) if input_columns is not None else list(columns)
        inputs = tuple((column, column) for column in picked)
        per_batch = True
    else:
        parameter = _first_parameter(api.func, api.ctx_param if api.needs_ctx else None)
        picked = _runner_input_columns(name, parameter, kind, columns, input_columns)
        inputs = tuple((parameter, column) for column in picked)
        shape = numpy_shape(descriptor) if kind == "ndarray" else None
        per_batch = kind == "ndarray" and (shape is None or not shape or shape[0] == -1)
    return ApiPlan(name, inputs, per_batch, None, kind, output_column, error_column)


def _runner_input_columns(
    api: str,
    parameter: str,
    kind: RunnerInput,
    columns: Sequence[str],
    input_columns: Sequence[str] | None,
) -> list[str]:
    """The column(s) a one-input runner API reads: given, its parameter's, or the only one."""
    if input_columns is not None:
        if len(input_columns) != 1 and kind != "ndarray":
            raise InvalidArgument(
                f"API {api!r} takes one {kind} value per row: give one input column, not "
                f"{len(input_columns)} ({', '.join(input_columns)}). Several columns make one "
                "array only for a NumpyNdarray input."
            )
        return list(input_columns)
    if parameter in columns:
        return [parameter]
    if len(columns) == 1:
        return [columns[0]]
    raise MissingColumn(
        f"API {api!r} reads its input from the column {parameter!r} (its parameter's name), "
        f"which the Dataset does not have; its columns: {', '.join(columns) or 'none'}. "
        "Name the column(s) to read with input_columns.",
        [parameter],
    )


def _first_parameter(func: Any, ctx_param: str | None) -> str:
    """The name of a runner API function's input parameter (BentoML requires one)."""
    return next(p for p in inspect.signature(func).parameters if p != ctx_param)


def _plan_service_api(
    svc: Any, name: str, columns: Sequence[str], output_column: str, error_column: str | None
) -> ApiPlan:
    method = svc.apis[name]
    spec = method.input_spec
    if getattr(spec, "__root_input__", False):
        raise InvalidArgument(
            f"API {name!r} takes its whole input as one value, which offline inference does "
            "not build from columns; give it named parameters."
        )
    fields = {key: field for key, field in spec.model_fields.items() if key != method.ctx_param}
    missing = [key for key, field in fields.items() if field.is_required() and key not in columns]
    if missing:
        raise MissingColumn(
            f"API {name!r} needs the column(s) {', '.join(map(repr, missing))} (one per "
            f"parameter, by name), which the Dataset does not have."
            f"{did_you_mean(missing[0], columns)} Its columns: {', '.join(columns) or 'none'}.",
            missing,
        )
    if method.batchable:  # BentoML's batchable APIs take their batch as their one argument
        first = next(iter(fields))
        if first not in columns:
            raise MissingColumn(
                f"API {name!r} is batchable: its batch is its first parameter, {first!r}, "
                "which must be a column of the Dataset.",
                [first],
            )
        inputs: tuple[tuple[str, str], ...] = ((first, first),)
        return ApiPlan(
            name, inputs, True, int(method.max_batch_size), None, output_column, error_column
        )
    inputs = tuple((key, key) for key in fields if key in columns)
    return ApiPlan(name, inputs, False, None, None, output_column, error_column)
