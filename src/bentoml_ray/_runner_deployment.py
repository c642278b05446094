"""The deployment that hosts one BentoML runner.

Each replica loads the service once, at start, and instantiates the runner's runnable
locally (its model is loaded then, not per request). Calls arrive from the API server over
a ``DeploymentHandle`` as ``call(method, args, kwargs)``; methods that the
``BatchingPlan`` names go through ``serve.batch`` first (behind a ``BatchGate``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from ._batch_gate import gated_batch
from ._batching import Call, merge_calls, split_result
from ._bento_source import BentoSource


class RunnerDeployment:
    def __init__(
        self, source: BentoSource, runner_name: str, batching: dict[str, dict[str, Any]]
    ) -> None:
        svc = source.load()
        self.runner = next(r for r in svc.runners if r.name == runner_name)
        self.runner.init_local(quiet=True)
        self.batched: dict[str, Callable[[Call], Awaitable[Any]]] = {
            name: gated_batch(options, self._batch_function(name))
            for name, options in batching.items()
        }

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        batched = self.batched.get(method)
        if batched is not None:
            return await batched((args, kwargs))
        return await getattr(self.runner, method).async_run(*args, **kwargs)

    async def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        async for chunk in getattr(self.runner, method).async_stream(*args, **kwargs):
            yield chunk

    def _batch_function(self, name: str) -> Callable[[list[Call]], Coroutine[Any, Any, list[Any]]]:
        method = getattr(self.runner, name)
        in_dim, out_dim = method.config.batch_dim

        async def run_batch(calls: list[Call]) -> list[Any]:
            merged = merge_calls(calls, in_dim) if len(calls) > 1 else None
            if merged is None:  # one call, or calls whose shapes cannot be merged
                return [await method.async_run(*args, **kwargs) for args, kwargs in calls]
            (args, kwargs), offsets = merged
            return split_result(await method.async_run(*args, **kwargs), offsets, out_dim)

        return run_batch
