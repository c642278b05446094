"""The API server's side of a runner: BentoML runner calls sent over a Ray DeploymentHandle.

BentoML lets a runner's transport be swapped (``Runner.init_client(handle_class, ...)``);
this is the transport that turns ``runner.predict.async_run(x)`` in the user's API function
into one ``DeploymentHandle`` call to the runner's deployment: Ray carries the arguments in
its object store, no HTTP and no BentoML payload encoding inside the cluster.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray.serve.handle import DeploymentHandle

from ._bentoml_internals import Runner, RunnerHandle, RunnerMethod


class RayRunnerHandle(RunnerHandle):
    def __init__(self, runner: Runner, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._stream_handle = handle.options(stream=True)

    async def is_ready(self, timeout: int) -> bool:
        # Ray Serve only routes to replicas whose constructor finished, so a handle is ready.
        return True

    def run_method(self, method: RunnerMethod[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
        # Called from the thread a sync API function runs in; ``result()`` blocks that thread only.
        return self._handle.call.remote(method.name, args, kwargs).result()

    async def async_run_method(
        self, method: RunnerMethod[Any, Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        return await self._handle.call.remote(method.name, args, kwargs)

    async def async_stream_method(  # type: ignore[override]
        self, method: RunnerMethod[Any, Any, Any], *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        async for chunk in self._stream_handle.stream.remote(method.name, args, kwargs):
            yield chunk
