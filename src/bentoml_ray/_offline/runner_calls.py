"""A runner-based API called in a Ray Data actor: its runners in-process, no HTTP.

The service is loaded as an API-server replica loads it (its ``on_deployment`` hooks run),
every runner gets BentoML's local transport behind ``LocalRunnerHandle`` (the model
loaded once, in this actor), the startup hooks run, and the API function is called with
what its IO descriptor would have decoded from a request.

Runs in a Ray Data actor.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._bento.source import BentoSource
from .._bentoml_internals import is_async_callable, json_model
from .._runners.http_app import call_hook
from .._runners.local_runner import LocalRunnerHandle
from .._runners.service import load_service
from .columns import cell, collected, split_rows
from .plan import ApiPlan


class RunnerApiCalls:
    def __init__(self, source: BentoSource, plan: ApiPlan) -> None:
        self.plan = plan
        self.svc: Any = load_service(source)
        for runner in self.svc.runners:
            runner.init_client(LocalRunnerHandle, {})  # the model loads here, once
        self.api = self.svc.apis[plan.api]
        self._is_async = is_async_callable(self.api.func)

    async def start(self) -> None:
        for hook in self.svc.startup_hooks:
            await call_hook(hook)

    async def call_batch(
        self, batch: Mapping[str, np.ndarray], start: int, stop: int
    ) -> np.ndarray | list[Any]:
        """The API on rows ``start:stop`` at once (an array, or a DataFrame)."""
        columns = {column: batch[column][start:stop] for _, column in self.plan.inputs}
        if self.plan.runner_input == "dataframe":
            import pandas as pd

            value: Any = pd.DataFrame({name: list(data) for name, data in columns.items()})
        else:
            value = self._array(list(columns.values()))
        return split_rows(await collected(await self._call(value)), stop - start)

    async def call_row(self, batch: Mapping[str, np.ndarray], row: int) -> Any:
        """The API on one row's value, built as its descriptor would decode it."""
        kind = self.plan.runner_input
        if kind == "ndarray":  # a descriptor with a fixed first dimension: one row's array
            picked = [batch[column][row : row + 1] for _, column in self.plan.inputs]
            value: Any = self.api.input.validate_array(self._stacked(picked)[0])
        else:
            value = cell(batch[self.plan.inputs[0][1]], row, keep_array=kind == "image")
            if value is None:
                raise ValueError(f"the row has no value for this {kind} input")
            if kind == "text":
                value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
            elif kind == "image":
                value = _image(value)
            elif kind == "file":
                value = io.BytesIO(value if isinstance(value, bytes) else str(value).encode())
            else:
                value = _json_value(self.api.input, value)
        return await collected(await self._call(value))

    def _array(self, columns: list[np.ndarray]) -> np.ndarray:
        """The rows' array, checked (and cast or reshaped) as the descriptor does for HTTP."""
        return self.api.input.validate_array(self._stacked(columns))  # type: ignore[no-any-return]

    @staticmethod
    def _stacked(columns: list[np.ndarray]) -> np.ndarray:
        """One array from the input column(s): a tensor column, or scalar columns side by side.

        Always a copy: Ray Data's batches may be read-only, and an API that changes its
        input in place must not change the input column the answer carries.
        """
        if len(columns) == 1:
            column = columns[0]
            return np.stack(list(column)) if column.dtype == object else np.array(column)
        return np.stack([np.asarray(column) for column in columns], axis=-1)

    async def _call(self, value: Any) -> Any:
        args = (value, self.svc.context) if self.api.needs_ctx else (value,)
        if self._is_async:
            return await self.api.func(*args)
        return self.api.func(*args)


def _image(value: Any) -> Any:
    from PIL import Image

    if isinstance(value, bytes):
        return Image.open(io.BytesIO(value))
    return Image.fromarray(value)  # an array of pixels


def _json_value(descriptor: Any, value: Any) -> Any:
    model = json_model(descriptor)
    return value if model is None else model.model_validate(value)
