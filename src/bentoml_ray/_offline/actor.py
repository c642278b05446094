"""The callable class Ray Data's actors run: a Bento loaded once, its API over each batch.

Each actor keeps an event loop of its own in a thread, where the service lives (its
runners' locks, a dependency's handles and BentoML's async code all want one loop for the
actor's life), whichever thread Ray Data calls it from. A batch goes in as numpy columns
and comes back with the input columns, the result column(s), and the error column when
failed rows are kept.

A per-batch call that fails is made again row by row, so that only the rows that fail
are failed, and so that the job's error (``errors.RowFailed``) can name the row. The
service's startup hooks run when the actor starts; its shutdown hooks do not, since Ray
Data ends its actors without a call to them.

Runs in a Ray Data actor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, TypeVar

import numpy as np

from .._bento.source import BentoSource
from .._defaults import OFFLINE_ROWS_AT_ONCE
from .columns import batch_length, cell, column_of, result_columns
from .errors import RowFailed, row_failed
from .plan import ApiPlan

T = TypeVar("T")


class ApiCalls(Protocol):
    """How an actor calls the API: ``runner_calls`` for runner-based Bentos, ``service_calls``
    for 1.2+ ones. ``call_batch`` answers rows ``start:stop`` at once, ``call_row`` one row."""

    async def start(self) -> None: ...

    async def call_batch(
        self, batch: Mapping[str, np.ndarray], start: int, stop: int
    ) -> np.ndarray | list[Any]: ...

    async def call_row(self, batch: Mapping[str, np.ndarray], row: int) -> Any: ...


class BentoApiActor:
    """Ray Data's callable class: built once per actor with the plan, called per batch.

    ``dependencies`` maps each dependency service to its deployment in the Serve
    ``application``, when the root's dependencies are called there; else it is empty.
    """

    def __init__(
        self,
        source: BentoSource,
        plan: ApiPlan,
        service_name: str,
        dependencies: Mapping[str, str],
        application: str | None,
    ) -> None:
        self.plan = plan
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="bentoml-api", daemon=True).start()
        self._calls = self._on_loop(self._start(source, service_name, dependencies, application))

    async def _start(
        self,
        source: BentoSource,
        service_name: str,
        dependencies: Mapping[str, str],
        application: str | None,
    ) -> ApiCalls:
        calls: ApiCalls
        if self.plan.runner_input is not None:
            from .runner_calls import RunnerApiCalls

            calls = RunnerApiCalls(source, self.plan)
        else:
            from .service_calls import ServiceApiCalls

            handles: dict[str, Any] = {}
            if dependencies:  # ray.serve only then: importing it costs an actor a second
                from ray import serve

                from .._replica.calls import CallTarget

                handles = {
                    service: CallTarget(serve.get_deployment_handle(deployment, application))
                    for service, deployment in dependencies.items()
                }
            calls = ServiceApiCalls(source, self.plan, service_name, handles)
        await calls.start()
        return calls

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._on_loop(self._score(batch))
        except RowFailed:
            _unwrapped_by_ray_data()
            raise

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _score(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_length(batch)
        errors: list[str | None] = [None] * rows
        results: np.ndarray | list[Any]
        if self.plan.per_batch:
            try:
                results = await self._calls.call_batch(batch, 0, rows)
            except Exception:
                singles = [self._calls.call_batch(batch, row, row + 1) for row in range(rows)]
                outcomes = await asyncio.gather(*singles, return_exceptions=True)
                results = [self._record(batch, r, o, errors, True) for r, o in enumerate(outcomes)]
        else:
            at_once = asyncio.Semaphore(OFFLINE_ROWS_AT_ONCE)

            async def call_row(row: int) -> Any:
                async with at_once:
                    return await self._calls.call_row(batch, row)

            calls = [call_row(row) for row in range(rows)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            results = [self._record(batch, r, o, errors, False) for r, o in enumerate(outcomes)]
        answer = dict(batch)
        answer.update(result_columns(results, self.plan.output_column))
        if self.plan.error_column is not None:
            answer[self.plan.error_column] = column_of(errors)
        return answer

    def _record(
        self,
        batch: Mapping[str, np.ndarray],
        row: int,
        outcome: Any,
        errors: list[str | None],
        single: bool,
    ) -> Any:
        """A row's result (of a one-row batch, if ``single``), or None and its error kept."""
        if not isinstance(outcome, BaseException):
            return outcome[0] if single else outcome
        if not isinstance(outcome, Exception):
            raise outcome  # a cancellation, an interpreter exit
        if self.plan.error_column is None:
            values = {name: cell(column, row, keep_array=True) for name, column in batch.items()}
            raise row_failed(self.plan.api, values, outcome) from outcome
        errors[row] = f"{type(outcome).__name__}: {outcome}"
        return None


def _unwrapped_by_ray_data() -> None:
    """Ask Ray Data to let the exception this task is raising through as it is.

    Ray Data wraps a callable's exceptions in a ``UserCodeException`` that reaches the
    driver without its cause, unless ``raise_original_map_exception`` is set in the
    ``DataContext`` it runs the task with (the current one, a copy of the driver's for
    this task; every Ray that bentoml-ray supports has it).
    """
    from ray.data import DataContext

    DataContext.get_current().raise_original_map_exception = True
